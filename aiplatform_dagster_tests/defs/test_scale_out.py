"""Scale-out ingestion through the real definitions and a real (ephemeral) instance: the plan
job, the sensor's one run per shard, a shard whose pod fails, and the release run that takes
the shards' vectors, embeds only the failed shard's rows and publishes. Each run the sensor
asks for is executed in-process with the tags and partition it asked for, as the daemon would
launch it."""

from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from aiplatform_dagster.config import SAMPLE_CORPUS_DIR
from aiplatform_dagster.definitions import load_definitions
from aiplatform_dagster.defs.ingestion.builds import PLAN_TAG
from aiplatform_dagster.defs.scale_out.assets import shards
from aiplatform_dagster.defs.scale_out.sensors import scale_out_ingestion_sensor
from aiplatform_dagster.rag.index.embedding import Shard, shard_of
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.rag.query.retriever import Retriever, SearchMode

pytestmark = pytest.mark.slow

FAILING_SHARD = "002-of-004"


def tick(instance: dg.DagsterInstance) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance) as context:
        return scale_out_ingestion_sensor(context)


def launch(
    defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(request.job_name)
    return job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=request.tags,
        raise_on_error=False,
    )


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = result.asset_materializations_for_node(asset)
    return {key: value.value for key, value in event.metadata.items()}


def test_a_release_built_in_shards_with_one_failed_shard(
    platform_env, embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage: Path = platform_env(SAMPLE_CORPUS_DIR)
    defs = load_definitions()
    with dg.DagsterInstance.ephemeral() as instance:
        assert "launch that job" in tick(instance).skip_reason.skip_message  # nothing planned

        plan = defs.resolve_job_def("ingestion_plan_job").execute_in_process(instance=instance)
        plan_build = metadata(plan, "document_chunks")["build_id"]
        planned_rows = metadata(plan, "document_chunks")["new_rows"]

        requests = tick(instance).run_requests
        assert [r.partition_key for r in requests] == shards.get_partition_keys()
        assert {r.job_name for r in requests} == {"embedding_shards_job"}
        assert all(r.tags[PLAN_TAG] == plan_build for r in requests)

        shard_rows = {}
        for request in requests:
            if request.partition_key == FAILING_SHARD:  # its pod fails: the model is missing
                with monkeypatch.context() as broken:
                    broken.setenv("AIPLATFORM_EMBEDDING_MODEL", str(storage / "no-such-model"))
                    assert not launch(load_definitions(), instance, request).success
                continue
            result = launch(defs, instance, request)
            assert result.success
            shard = metadata(result, "embedding_shards")
            assert shard["plan_build"] == plan_build
            shard_rows[request.partition_key] = shard["dagster/row_count"]
        assert sum(shard_rows.values()) < planned_rows and all(shard_rows.values())

        [release_request] = tick(instance).run_requests  # every shard run has ended
        assert release_request.job_name == "ingestion_release_job"
        assert release_request.tags["aiplatform/failed_shards"] == FAILING_SHARD
        release = launch(defs, instance, release_request)
        assert release.success
        embedded = metadata(release, "chunk_embeddings")
        assert embedded["from_shards"] == sum(shard_rows.values())
        assert embedded["computed"] == planned_rows - sum(shard_rows.values())  # the failed one

        assert tick(instance).run_requests == []  # released: nothing more to launch

    repository = IndexRepository(storage / "ingestion")
    current = repository.open_pointer()
    assert current.release_id == metadata(release, "current_release")["release_id"]
    failed = Shard.parse(FAILING_SHARD)
    docs = {chunk.doc_id for chunk in current.chunks}
    assert any(shard_of(doc, failed.count) == failed.index for doc in docs)
    vectors = np.concatenate([np.asarray(s.vectors.vectors) for s in current.segments])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    top = Retriever.from_release(current, embedder).search(
        "When does the on-call rotation hand over?", SearchMode.DENSE, k=3
    )
    assert top[0].chunk.doc_id == "operations/on_call_runbook.md"
