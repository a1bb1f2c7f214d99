"""The declarative automation condition of the assets that follow the index releases.

Dagster's ``eager()`` forgets a dependency's update that lands in the same tick as the asset's
own last request or materialisation: its "handled" reset combines conditions with ``|`` and
``&``, which drop the timestamps that let ``since`` see which came later, and a tie resets. A
second ingestion a few seconds after the first one's evaluation was seen to leave
``retrieval_eval`` unevaluated for good. Here the trigger and the reset are single timed
conditions, so an update after the asset's request wins the tie, and only the asset's own
request resets it: every update of a dependency gets one request.
"""

import dagster as dg

AC = dg.AutomationCondition


def follows_its_dependencies() -> dg.AutomationCondition:
    """Like ``eager()``: requested once a dependency updates (or while never materialised),
    not while a dependency is missing or in progress or the asset is; reset by its request."""
    requested = AC.newly_requested()
    return (
        AC.in_latest_time_window()
        & (
            AC.newly_missing().since(requested)
            | AC.any_deps_match(AC.newly_updated()).since(requested).with_label("any_deps_updated")
        )
        & ~AC.any_deps_missing()
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label("follows its dependencies")
