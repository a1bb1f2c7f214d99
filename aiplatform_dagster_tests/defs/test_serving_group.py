"""The serving group with the real definitions: serving_release over a copy of the sample
release (MiniLM), the rollback job, the flip sensor and the automation that reruns it."""

import shutil
from pathlib import Path

import dagster as dg
import pytest

from aiplatform_dagster.config import PROFILE_VARIABLE, SAMPLE_CORPUS_DIR, load_settings
from aiplatform_dagster.definitions import load_definitions
from aiplatform_dagster.defs.resources import PlatformResource
from aiplatform_dagster.defs.serving.sensors import serving_flips_sensor
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.rag.ingest.documents import load_documents
from aiplatform_dagster.rag.ingest.pipeline import ingest
from aiplatform_dagster.serving.release import open_serving_releases
from aiplatform_dagster_tests.conftest import write_corpus

SERVING = dg.AssetKey("serving_release")


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return load_definitions()


@pytest.fixture
def storage(
    sample_repository: IndexRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    storage = tmp_path / "storage"
    shutil.copytree(sample_repository.root, storage / "ingestion")
    monkeypatch.setenv("AIPLATFORM_STORAGE_DIR", str(storage))
    monkeypatch.setenv("AIPLATFORM_MONITORING_QUERY_LOG", "false")
    for variable in ("OPENAI_API_KEY", "AIPLATFORM_LLM_BASE_URL", "AIPLATFORM_RERANKER_MODEL",
                     "AIPLATFORM_QUERY_ROUTER_MODEL", PROFILE_VARIABLE):  # fmt: skip
        monkeypatch.delenv(variable, raising=False)
    return storage


def publish(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[SERVING], instance=instance, raise_on_error=False
    )


def new_index_release(storage: Path, embedder, files: dict[str, str] | None = None) -> str:
    folder = storage.parent / "docs"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(SAMPLE_CORPUS_DIR, folder)
    write_corpus(folder, files or {"extra/new.md": "# Drill\n\nThe BLUEHERON drill is Friday."})
    documents, _ = load_documents(folder)
    return ingest(IndexRepository(storage / "ingestion"), documents, embedder).release.release_id


def materializations(instance: dg.DagsterInstance) -> list[dg.AssetMaterialization]:
    records = instance.fetch_materializations(SERVING, limit=100).records
    return [record.asset_materialization for record in reversed(records)]


def test_serving_release_publishes_flips_only_on_change_and_rolls_back(
    defs: dg.Definitions, storage: Path, embedder
) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        first = publish(defs, instance)
        assert first.success
        metadata = materializations(instance)[0].metadata
        assert metadata["flip"].value == 1 and metadata["kind"].value == "publish"
        assert metadata["router"].value == "rules" and metadata["reranker"].value == "none"
        assert metadata["smoke_decision"].value.startswith("published: first serving release")
        assert metadata["smoke_ndcg@10"].value > 0.5
        first_id = metadata["release_id"].value

        assert publish(defs, instance).success  # nothing changed: no flip, no materialisation
        assert len(materializations(instance)) == 1

        index = new_index_release(storage, embedder)
        assert publish(defs, instance).success
        second = materializations(instance)[-1].metadata
        assert (second["index_release"].value, second["previous_release"].value) == (
            index,
            first_id,
        )
        assert f"on the live release {first_id}" in second["smoke_decision"].value

        rollback = defs.resolve_job_def("rollback_serving_release")
        stale = rollback.execute_in_process(
            run_config={"ops": {"rollback_serving_release_op": {"config": {
                "reason": "stale", "expected_live": first_id}}}},
            instance=instance, raise_on_error=False,
        )  # fmt: skip
        assert not stale.success
        failure = stale.failure_data_for_node("rollback_serving_release_op")
        assert "nothing was rolled back" in failure.error.message
        back = rollback.execute_in_process(
            run_config={"ops": {"rollback_serving_release_op": {"config": {"reason": "paged"}}}},
            instance=instance,
        )
        assert back.success
        rolled = materializations(instance)[-1].metadata
        assert (rolled["release_id"].value, rolled["kind"].value) == (first_id, "rollback")
        assert open_serving_releases(load_settings()).live().release == first_id


def test_a_candidate_that_regresses_fails_the_run_and_the_live_release_stays(
    defs: dg.Definitions, storage: Path, embedder
) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        assert publish(defs, instance).success
        live = open_serving_releases(load_settings()).live().release
        shutil.rmtree(storage.parent / "docs", ignore_errors=True)
        write_corpus(storage.parent / "docs", {"only.md": "# Lunch\n\nThe canteen opens at noon."})
        documents, _ = load_documents(storage.parent / "docs")
        ingest(IndexRepository(storage / "ingestion"), documents, embedder)
        refused = publish(defs, instance)
        assert not refused.success
        message = refused.failure_data_for_node("serving_release").error.message
        assert "was not published: not published: routed ndcg@10" in message
        assert "The live release keeps serving" in message
        assert len(materializations(instance)) == 1
        assert open_serving_releases(load_settings()).live().release == live


def test_flips_from_the_command_line_appear_on_serving_release(
    defs: dg.Definitions, storage: Path, embedder
) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        assert publish(defs, instance).success
        new_index_release(storage, embedder)
        assert publish(defs, instance).success
        releases = open_serving_releases(load_settings())
        flip = releases.rollback("cli:alice", "bad answers in #support")
        context = dg.build_sensor_context(instance=instance, cursor=None)
        result = serving_flips_sensor(context, platform=PlatformResource())
        assert [event.description for event in result.asset_events] == [
            f"rollback to {flip.release} by cli:alice: bad answers in #support"
        ]  # the two flips the asset made are already on it
        assert result.cursor == "3"
        again = serving_flips_sensor(
            dg.build_sensor_context(instance=instance, cursor=result.cursor),
            platform=PlatformResource(),
        )
        assert isinstance(again, dg.SkipReason)


def test_automation_publishes_after_ingestion_even_before_any_model_is_trained(
    defs: dg.Definitions, storage: Path
) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        selection = dg.AssetSelection.assets(SERVING)
        before = dg.evaluate_automation_conditions(defs, instance, asset_selection=selection)
        assert before.get_num_requested(SERVING) == 0  # no current release yet: nothing to pin
        instance.report_runless_asset_event(dg.AssetMaterialization("current_release"))
        after = dg.evaluate_automation_conditions(
            defs, instance, asset_selection=selection, cursor=before.cursor
        )
        assert after.get_num_requested(SERVING) == 1
        quiet = dg.evaluate_automation_conditions(
            defs, instance, asset_selection=selection, cursor=after.cursor
        )
        assert quiet.get_num_requested(SERVING) == 0  # requested once per change
        instance.report_runless_asset_event(dg.AssetMaterialization("model_registry"))
        moved = dg.evaluate_automation_conditions(
            defs, instance, asset_selection=selection, cursor=quiet.cursor
        )
        assert moved.get_num_requested(SERVING) == 1  # a champion moved: pin it in a release
