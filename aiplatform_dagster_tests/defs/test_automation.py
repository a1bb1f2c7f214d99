"""The follower condition against the race that Dagster's eager() loses: the follower's own run
lands in the same tick window as its dependency's next update (a quick second ingestion right
after the first's evaluation, seen in the browser test). Evaluated by Dagster's own automation
evaluator on an ephemeral instance."""

import dagster as dg
import pytest

from aiplatform_dagster.defs.automation import follows_its_dependencies


def definitions(condition: dg.AutomationCondition) -> dg.Definitions:
    @dg.asset
    def release() -> None: ...

    @dg.asset(deps=[release], automation_condition=condition)
    def evaluation() -> None: ...

    return dg.Definitions(assets=[release, evaluation])


@pytest.mark.parametrize(
    ("condition", "second_release_evaluated"),
    [(follows_its_dependencies(), True), (dg.AutomationCondition.eager(), False)],
    ids=["follows_its_dependencies", "dagster_eager"],
)
def test_a_release_published_while_the_last_evaluation_ran_is_evaluated_too(
    condition: dg.AutomationCondition, second_release_evaluated: bool
) -> None:
    defs = definitions(condition)
    with dg.DagsterInstance.ephemeral() as instance:

        def tick(cursor=None) -> dg.EvaluateAutomationConditionsResult:
            return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)

        def materialize(*keys: str) -> None:
            assets = [defs.get_assets_def(key) for key in keys]
            assert dg.materialize(assets, instance=instance, selection=list(keys)).success

        first = tick()
        assert first.total_requested == 0  # no release yet
        materialize("release")
        requested = tick(first.cursor)
        assert requested.total_requested == 1  # the first release is evaluated
        materialize("evaluation")  # that evaluation runs,
        materialize("release")  # and a second release is published before the next tick
        after = tick(requested.cursor)
        assert (after.total_requested == 1) is second_release_evaluated
        if second_release_evaluated:
            materialize("evaluation")
            assert tick(after.cursor).total_requested == 0  # once per release, not again
