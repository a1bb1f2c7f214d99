"""A step's Kubernetes Job as the k8s_job_executor builds it, offline.

dagster-k8s's own functions in the order ``K8sStepHandler.launch_step`` calls them: the run
launcher's container context for the run, merged with the step's ``dagster-k8s/config`` op
tag, then ``construct_dagster_k8s_job``. Only the API server is absent: nothing is created.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import construct_dagster_k8s_job, get_k8s_job_name, get_user_defined_k8s_config
from kubernetes.client import ApiClient


def step_job(
    run: dg.DagsterRun,
    launcher: K8sRunLauncher,
    step: str,
    tags: Mapping[str, Any],
    image: str | None = None,
) -> dict[str, Any]:
    """The Job manifest for ``step`` (with op ``tags``) of ``run``; ``image`` defaults to the
    launcher's."""
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
    context = context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
    name = f"dagster-step-{get_k8s_job_name(run.run_id, step)}"
    manifest = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(image, launcher),
        args=["dagster", "api", "execute_step"],
        job_name=name,
        pod_name=name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/op": step, "dagster/run-id": run.run_id},
        env_vars=[{"name": "DAGSTER_RUN_STEP_KEY", "value": step}],
    )
    return ApiClient().sanitize_for_serialization(manifest)
