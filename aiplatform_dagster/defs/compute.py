"""Compute profiles: what each step needs, and on which node pool it runs.

Every asset and check names one profile. Locally the profile's node pool is a Dagster
concurrency pool (one GPU step at a time, see ``maintenance.py``). On Kubernetes, under the
``k8s_job_executor`` (``executor.py``), each step is its own Job, and the profile's
``dagster-k8s/config`` tag becomes that Job's pod: requests and limits (``nvidia.com/gpu`` for a
GPU profile), the node selector and toleration of the node pool ``terraform/aks.tf`` creates,
and the service account with Azure workload identity. Op tags reach step pods only under the
``k8s_job_executor``; the K8sRunLauncher alone would run every step in the run's pod.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ComputePool(StrEnum):
    """A node pool, and the Dagster concurrency pool of the same name."""

    CPU = "cpu"
    GPU = "gpu"


POOL_LABEL = "aiplatform/pool"
"""The node label ``terraform/`` puts on each user node pool, and the op tag naming the pool."""
POOL_TAG = POOL_LABEL
PROFILE_TAG = "aiplatform/compute-profile"
"""The op tag naming the profile (shown on each asset in the Dagster UI)."""
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
"""Tolerates the GPU pool's taint, which keeps every other pod off the expensive nodes."""
STEP_SERVICE_ACCOUNT = "aiplatform-dagster"
"""Bound to a managed identity by ``terraform/identity.tf`` (workload identity federation)."""
WORKLOAD_IDENTITY_LABEL = "azure.workload.identity/use"


@dataclass(frozen=True)
class ComputeProfile:
    """Requests are what the scheduler reserves on a node; limits are where the kubelet stops a
    step (CPU throttled, memory killed). Sized to fit the pool's VM after AKS's reservations."""

    name: str
    pool: ComputePool
    cpu: tuple[str, str]
    """(request, limit) in Kubernetes quantities."""
    memory: tuple[str, str]
    gpus: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    """Settings this profile's steps need (a GPU step must also be told to use it)."""

    def k8s_config(self) -> dict[str, Any]:
        """The ``dagster-k8s/config`` tag: dagster-k8s merges it into the step's Job."""
        requests = {"cpu": self.cpu[0], "memory": self.memory[0]}
        limits = {"cpu": self.cpu[1], "memory": self.memory[1]}
        if self.gpus:
            requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(self.gpus)
        pod_spec: dict[str, Any] = {
            "node_selector": {POOL_LABEL: self.pool.value},
            "service_account_name": STEP_SERVICE_ACCOUNT,
        }
        if self.gpus:
            pod_spec["tolerations"] = [GPU_TAINT]
        container: dict[str, Any] = {"resources": {"requests": requests, "limits": limits}}
        if self.env:
            container["env"] = [{"name": name, "value": value} for name, value in self.env.items()]
        return {
            "container_config": container,
            "pod_spec_config": pod_spec,
            "pod_template_spec_metadata": {
                "labels": {WORKLOAD_IDENTITY_LABEL: "true", PROFILE_TAG: self.name}
            },
        }

    def op_tags(self) -> dict[str, Any]:
        return {
            PROFILE_TAG: self.name,
            POOL_TAG: self.pool.value,
            "dagster-k8s/config": self.k8s_config(),
        }


CPU_SMALL = ComputeProfile("cpu-small", ComputePool.CPU, ("500m", "2"), ("1Gi", "4Gi"))
"""Bookkeeping steps: registries, manifests, pointers, small evaluations."""
CPU_LARGE = ComputeProfile("cpu-large", ComputePool.CPU, ("2", "4"), ("8Gi", "16Gi"))
"""Index builds, evaluation over a whole golden set, CPU model training (Standard_D8s_v5)."""
GPU_T4 = ComputeProfile(
    "gpu-t4",
    ComputePool.GPU,
    ("4", "7"),
    ("16Gi", "48Gi"),
    gpus=1,
    env={"AIPLATFORM_EMBEDDING_DEVICE": "cuda", "AIPLATFORM_RERANKER_DEVICE": "cuda"},
)
"""Embedding and model training on one T4 (Standard_NC8as_T4_v3: 8 vCPU, 56 GiB)."""

PROFILES = {profile.name: profile for profile in (CPU_SMALL, CPU_LARGE, GPU_T4)}

GPU_RUN_TAGS = {POOL_TAG: ComputePool.GPU.value}
"""Run tags of the jobs that hold GPU steps: the production run queue limits runs so tagged
(k8s/dagster/values.yaml), so GPU runs never outnumber the GPU nodes. A run launched from the UI
or by automation is not tagged; its GPU steps still wait for the ``gpu`` concurrency pool."""


def on_profile(profile: ComputeProfile) -> dict[str, Any]:
    """Decorator arguments for an asset: its step's tags and concurrency pool, and the profile
    as an asset tag, so the Dagster UI shows it on the asset."""
    return {**check_on_profile(profile), "tags": {PROFILE_TAG: profile.name}}


def check_on_profile(profile: ComputeProfile) -> dict[str, Any]:
    """Decorator arguments for an asset check (checks carry no asset tags)."""
    return {"op_tags": profile.op_tags(), "pool": profile.pool.value}


def op_on_profile(profile: ComputeProfile) -> dict[str, Any]:
    """Decorator arguments for a plain op (``tags``, not ``op_tags``)."""
    return {"tags": profile.op_tags(), "pool": profile.pool.value}
