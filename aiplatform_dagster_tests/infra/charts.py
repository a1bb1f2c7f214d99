"""The repository's own charts (k8s/charts/), each with what the README's `helm upgrade
--install <chart> k8s/charts/<chart> -n aiplatform` passes with --set (terraform outputs of
production, the image), and the Dagster values (k8s/dagster/): shared by each one's tests and
by the tests that check one against another or against terraform/."""

from collections.abc import Mapping
from typing import Any, NamedTuple

import yaml

from aiplatform_dagster_tests.infra.helm import LocalChart, merged
from aiplatform_dagster_tests.infra.kubernetes import PROJECT_ROOT
from aiplatform_dagster_tests.infra.settings import (
    documented_settings,
    effective_values,
    plain_env,
)

NAMESPACE = "aiplatform"
IMAGE = {"registry": "aiplatformacr.azurecr.io", "tag": "3f2c1ab"}


def installed(name: str, install_values: Mapping[str, Any]) -> LocalChart:
    """k8s/charts/<name>, installed as the release <name> in the platform's namespace."""
    return LocalChart(PROJECT_ROOT / "k8s" / "charts" / name, name, NAMESPACE, install_values)


# No defaults on purpose: each render fails naming whichever is missing.
API = installed(
    "aiplatform-api",
    {
        "image": IMAGE,
        "serviceAccount": {"clientId": "11111111-2222-3333-4444-555555555555"},
        "ingress": {"host": "api.aiplatform.test"},
        "postgresql": {"host": "aiplatform-pg.postgres.database.azure.com"},
    },
)
MLFLOW = installed(
    "aiplatform-mlflow",
    {
        "image": IMAGE,
        "postgresql": {"host": "psql-aiplatform-prd.postgres.database.azure.com"},
        "artifacts": {"storageAccount": "staiplatformprdart"},
    },
)
STORAGE = installed(
    "aiplatform-storage",
    {"azure": {"storageAccount": "staiplatformprdfiles", "resourceGroup": "rg-aiplatform-prd"}},
)
ALL = (API, MLFLOW, STORAGE)

DAGSTER_VALUES = PROJECT_ROOT / "k8s" / "dagster"
ENVIRONMENTS = ("staging", "production")


def dagster_values(environment: str) -> dict[str, Any]:
    """``--values k8s/dagster/values.yaml --values k8s/dagster/values-<environment>.yaml``."""
    return merged(
        *(
            yaml.safe_load((DAGSTER_VALUES / name).read_text())
            for name in ("values.yaml", f"values-{environment}.yaml")
        )
    )


class PostgresLogin(NamedTuple):
    """Who signs in to the platform's PostgreSQL server, as which role, to which database."""

    deployment: str
    environment: str  # "default": a chart's values.yaml, which every environment starts from
    user: str
    database: str


def postgres_logins() -> list[PostgresLogin]:
    """Every sign-in the Helm values configure: Dagster's instance storage in each environment,
    and each of this repository's charts, with each values file, where its database is on."""
    logins = [
        PostgresLogin(
            "dagster",
            environment,
            dagster_values(environment)["postgresql"]["postgresqlUsername"],
            dagster_values(environment)["postgresql"]["postgresqlDatabase"],
        )
        for environment in ENVIRONMENTS
    ]
    for chart in ALL:
        for values_file in chart.values_files:
            postgres = chart.values(values_file).get("postgresql")
            if postgres and postgres.get("enabled", True):
                environment = values_file.removeprefix("values-").removesuffix(".yaml")
                user, database = postgres["user"], postgres["database"]
                environment = "default" if environment == "values" else environment
                logins.append(PostgresLogin(chart.release, environment, user, database))
    return logins


WEAVIATE_VALUES = PROJECT_ROOT / "k8s" / "weaviate" / "values.yaml"
WEAVIATE_CLIENT_SERVICE = PROJECT_ROOT / "k8s" / "weaviate" / "client-service.yaml"
WEAVIATE_API_KEY = {"secretKeyRef": {"name": "aiplatform-weaviate", "key": "api-key"}}
"""How the platform's pods get the Weaviate API key: from the Secret, never a literal."""


def backend_settings() -> dict[str, str]:
    """What the comments of the MLflow chart's and the Weaviate values tell the platform's pods
    to set: the tracking server's Service and artifact proxy, Weaviate's client Service (each
    proven against the Service it names by test_mlflow_chart.py and test_weaviate_values.py)."""
    return {
        **documented_settings(MLFLOW.path / "values.yaml"),
        **documented_settings(WEAVIATE_VALUES),
    }


def backend_wiring(env: list[Mapping[str, Any]]) -> dict[str, Any]:
    """What a container's ``env`` makes of each backend setting: its parsed value (set or
    default), and the Weaviate API key's source."""
    values = effective_values(plain_env({"env": env}))
    sources = {variable["name"]: variable.get("valueFrom", "literal") for variable in env}
    return {
        **{name: values[name] for name in backend_settings()},
        "WEAVIATE_API_KEY": sources.get("WEAVIATE_API_KEY"),
    }


def documented_backend_wiring() -> dict[str, Any]:
    """``backend_wiring`` of a container set as the MLflow chart and Weaviate values say."""
    values = effective_values(backend_settings())
    return {
        **{name: values[name] for name in backend_settings()},
        "WEAVIATE_API_KEY": WEAVIATE_API_KEY,
    }
