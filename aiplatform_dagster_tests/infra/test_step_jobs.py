"""Every asset step's Kubernetes Job, built as the k8s_job_executor builds it, offline
(``dagster_jobs.py``; the launcher reads a kubeconfig pointing nowhere). Each manifest is
validated strictly against the Kubernetes version terraform/ pins for AKS,
and its placement against the node pools terraform/ declares.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster_k8s import K8sRunLauncher

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.definitions import load_definitions
from aiplatform_dagster.defs.compute import (
    GPU_RESOURCE,
    POOL_LABEL,
    POOL_TAG,
    PROFILE_TAG,
    PROFILES,
    STEP_SERVICE_ACCOUNT,
)
from aiplatform_dagster_tests.infra import dagster_jobs
from aiplatform_dagster_tests.infra.kubernetes import TERRAFORM_DIR, load_hcl, validate_manifests

IMAGE = "acraiplatformprd.azurecr.io/aiplatform-dagster:0123abc-cuda"
GPU_STEPS = {
    "chunk_embeddings", "embedding_shards", "embedder_model", "candidate_release", "reranker_model",
}  # fmt: skip
"""Embedding and model training; everything else must never ask for a GPU."""
CUDA_DEVICES = {"AIPLATFORM_EMBEDDING_DEVICE": "cuda", "AIPLATFORM_RERANKER_DEVICE": "cuda"}

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: offline, user: {token: unused}}]
contexts: [{name: offline, context: {cluster: offline, user: offline}}]
current-context: offline
"""


@pytest.fixture(scope="module")
def definitions() -> Iterator[dg.Definitions]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIPLATFORM_EXECUTION_EXECUTOR", "k8s")
        yield load_definitions()


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> K8sRunLauncher:
    """The production run launcher's settings (k8s/dagster/values.yaml), minus a cluster."""
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(KUBECONFIG)
    return K8sRunLauncher(
        service_account_name=STEP_SERVICE_ACCOUNT,
        instance_config_map="dagster-instance",
        postgres_password_secret="aiplatform-postgres",
        dagster_home="/opt/dagster/dagster_home",
        job_image=IMAGE,
        load_incluster_config=False,
        kubeconfig_file=str(kubeconfig),
        job_namespace="aiplatform",
    )


def step_job(job: dg.JobDefinition, step: str, launcher: K8sRunLauncher) -> dict[str, Any]:
    """The Job manifest the k8s_job_executor would create for ``step`` of a run of ``job``."""
    run = dg.DagsterRun(job_name=job.name, run_id=str(uuid.uuid4()))
    return dagster_jobs.step_job(run, launcher, step, job.graph.node_named(step).definition.tags)


def asset_job(definitions: dg.Definitions) -> dg.JobDefinition:
    """What the UI's Materialize, a backfill and declarative automation launch."""
    return definitions.resolve_implicit_global_asset_job_def()


def pod(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]


def test_the_production_definitions_use_the_k8s_job_executor(
    definitions: dg.Definitions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Op tags reach step pods only under this executor; without it every step would run in
    the run's own pod, on whatever pool that landed on."""
    assert asset_job(definitions).executor_def.name == "k8s"
    monkeypatch.delenv("AIPLATFORM_EXECUTION_EXECUTOR")
    assert load_definitions().executor is None  # unset: Dagster's multiprocess one
    monkeypatch.setenv("AIPLATFORM_EXECUTION_EXECUTOR", "in_process")  # as `make dev` sets it
    assert load_definitions().executor.name == "in_process"


def test_every_step_job_is_a_valid_kubernetes_job_on_its_profiles_pool(
    definitions: dg.Definitions, launcher: K8sRunLauncher
) -> None:
    job = asset_job(definitions)
    steps = [node.name for node in job.graph.node_dict.values()]
    manifests = {step: step_job(job, step, launcher) for step in steps}
    assert validate_manifests(manifests.values()) == []
    for step, manifest in manifests.items():
        spec, [container] = pod(manifest), pod(manifest)["containers"]
        profile = PROFILES[manifest["spec"]["template"]["metadata"]["labels"][PROFILE_TAG]]
        wants_gpu = GPU_RESOURCE in container["resources"]["limits"]
        assert wants_gpu == (step in GPU_STEPS), step
        assert spec["nodeSelector"] == {POOL_LABEL: "gpu" if wants_gpu else "cpu"}, step
        assert bool(spec.get("tolerations")) == wants_gpu, step
        assert container["resources"]["requests"]["cpu"] == profile.cpu[0], step
        assert spec["serviceAccountName"] == STEP_SERVICE_ACCOUNT
        assert manifest["spec"]["backoffLimit"] == 0  # Dagster owns retries
        assert container["image"] == IMAGE and spec["restartPolicy"] == "Never"
        devices = {e["name"]: e["value"] for e in container["env"] if e["name"].endswith("_DEVICE")}
        assert devices == (CUDA_DEVICES if wants_gpu else {}), step  # a GPU step uses its GPU


def test_the_device_settings_a_gpu_step_gets_are_real_settings() -> None:
    settings = load_settings(CUDA_DEVICES)
    assert (settings.embedding.device, settings.reranker.device) == ("cuda", "cuda")


def test_jobs_that_hold_gpu_steps_are_tagged_for_the_run_queues_gpu_limit(
    definitions: dg.Definitions,
) -> None:
    repository = definitions.get_repository_def()
    for job in repository.get_all_jobs():
        steps = {node.name for node in job.graph.node_dict.values()}
        if job.name.startswith("__") or not steps & GPU_STEPS:
            continue  # the implicit asset job's runs are limited by the gpu pool instead
        assert job.tags.get(POOL_TAG) == "gpu", job.name


def test_gpu_steps_tolerate_exactly_the_taint_terraform_puts_on_the_gpu_pool(
    definitions: dg.Definitions, launcher: K8sRunLauncher
) -> None:
    pools = terraform_node_pools()
    manifest = step_job(asset_job(definitions), "chunk_embeddings", launcher)
    selector, [toleration] = pod(manifest)["nodeSelector"], pod(manifest)["tolerations"]
    [gpu_pool] = [p for p in pools.values() if p["labels"].get(POOL_LABEL) == "gpu"]
    key, effect = toleration["key"], toleration["effect"]
    assert any(t.startswith(f"{key}=") and t.endswith(f":{effect}") for t in gpu_pool["taints"])
    assert selector.items() <= gpu_pool["labels"].items()
    [cpu_pool] = [p for p in pools.values() if p["labels"].get(POOL_LABEL) == "cpu"]
    assert not cpu_pool["taints"]  # CPU steps need no toleration to land there
    assert gpu_pool["min_count"] == 0  # no GPU node is paid for while no GPU step runs


def test_every_launch_path_gives_a_step_the_same_pod(
    definitions: dg.Definitions, launcher: K8sRunLauncher
) -> None:
    """The UI, a backfill and declarative automation launch the asset job; sensors and schedules
    launch their own jobs. Each must carry the step's profile (dagster#22865, #26720, #33430
    report config dropped on some of these paths when it lives elsewhere than on the op)."""
    reference = asset_job(definitions)
    repository = definitions.get_repository_def()
    paths = {
        (f"sensor {sensor.name}", job.name)
        for sensor in repository.sensor_defs
        if sensor.has_jobs
        for job in sensor.jobs
    }
    paths |= {(f"schedule {s.name}", s.job_name) for s in repository.schedule_defs}
    assert len(paths) >= 4 and None not in dict(paths).values(), paths
    for path, job_name in sorted(paths):
        job = repository.get_job(job_name)
        for node in job.graph.node_dict.values():
            launched, expected = (pod(step_job(j, node.name, launcher)) for j in (job, reference))
            assert launched == expected, f"{node.name} launched by {path} ({job_name})"


def terraform_node_pools() -> dict[str, dict[str, Any]]:
    """The AKS user node pools declared in terraform/, by resource name."""
    pools = {}
    for path in sorted(Path(TERRAFORM_DIR).glob("*.tf")):
        for resource in load_hcl(path).get("resource", []):
            for name, pool in resource.get("azurerm_kubernetes_cluster_node_pool", {}).items():
                pools[name] = {
                    "labels": pool.get("node_labels", {}),
                    "taints": pool.get("node_taints", []),
                    "min_count": pool.get("min_count"),
                }
    return pools
