"""CPU and GPU compute pools.

Every asset names the pool it needs. Locally the name is a Dagster concurrency pool (so at
most one GPU step runs at a time, see dagster.yaml); on Kubernetes the same tag carries the
dagster-k8s pod config that places the step's Job on the matching node pool.
"""

from enum import StrEnum
from typing import Any


class ComputePool(StrEnum):
    CPU = "cpu"
    GPU = "gpu"


POOL_TAG = "aiplatform/pool"

_POD_CONFIG: dict[ComputePool, dict[str, Any]] = {
    ComputePool.CPU: {
        "container_config": {
            "resources": {
                "requests": {"cpu": "1", "memory": "2Gi"},
                "limits": {"cpu": "2", "memory": "8Gi"},
            }
        },
        "pod_spec_config": {"node_selector": {"aiplatform/pool": "cpu"}},
    },
    ComputePool.GPU: {
        "container_config": {
            "resources": {
                "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
            }
        },
        "pod_spec_config": {
            "node_selector": {"aiplatform/pool": "gpu"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
    },
}


def pool_op_tags(pool: ComputePool) -> dict[str, Any]:
    """Op tags that route a step to ``pool``: read by dagster-k8s's k8s_job_executor."""
    return {POOL_TAG: pool.value, "dagster-k8s/config": _POD_CONFIG[pool]}


def on_pool(pool: ComputePool) -> dict[str, Any]:
    """Decorator arguments for an asset or check: its k8s tags and its concurrency pool."""
    return {"op_tags": pool_op_tags(pool), "pool": pool.value}
