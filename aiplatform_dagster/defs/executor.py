"""How a run's steps execute: in processes (Dagster's default), one after another in the run's
own process (``in_process``, which `make dev` sets: on a laptop every step process would import
the code location and load its model again, most of a short run's time), or each step as its
own Kubernetes Job (``AIPLATFORM_EXECUTION_EXECUTOR=k8s``, set by the production Helm values).

Under the ``k8s_job_executor`` the step's ``dagster-k8s/config`` op tag (its compute profile,
``compute.py``) shapes its Job; the K8sRunLauncher's settings (image, namespace, secrets,
volumes) are inherited from the instance. Dagster owns retries: dagster-k8s creates every Job
with ``backoffLimit: 0``, so a failed pod fails the step and the run's retry policy decides.
"""

import dagster as dg

from aiplatform_dagster.config import ExecutionSettings, load_settings
from aiplatform_dagster.defs.compute import POOL_TAG, ComputePool


def step_executor(execution: ExecutionSettings) -> dg.ExecutorDefinition | None:
    """The executor the settings name; None keeps Dagster's default (multiprocess)."""
    if execution.executor == "multiprocess":
        return None
    if execution.executor == "in_process":
        return dg.in_process_executor
    from dagster_k8s import k8s_job_executor  # the Kubernetes client loads only when used

    gpu_limit = {
        "key": POOL_TAG,
        "value": ComputePool.GPU.value,
        "limit": execution.max_concurrent_gpu_steps,
    }
    return k8s_job_executor.configured({"tag_concurrency_limits": [gpu_limit]})


@dg.definitions
def executor() -> dg.Definitions:
    return dg.Definitions(executor=step_executor(load_settings().execution))
