"""The model registry as an asset: every alias move is a materialisation, so "which version was
champion on date X, and why" is answered in the Dagster UI (MLflow keeps no alias history).

Moves happen in the gate (``query_router_validation``) and from the command line (``aiplatform
model promote|rollback``); both record the move in the registry, and this sensor reports each
one as a materialisation of ``model_registry``.
"""

import dagster as dg

from aiplatform_dagster.defs.resources import MlflowResource
from aiplatform_dagster.defs.training.assets import GROUP, OWNERS

model_registry = dg.AssetSpec(
    "model_registry",
    group_name=GROUP,
    owners=OWNERS,
    kinds={"mlflow"},
    description="The MLflow model registry's aliases (challenger, staging, champion, production);"
    " one materialisation per alias move, with the versions, the reason and who moved it.",
)


@dg.sensor(
    name="model_registry_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s: reports each new alias move in the MLflow registry (gate "
    "promotions, command-line promotions and rollbacks) as a materialisation of model_registry.",
)
def model_registry_sensor(
    context: dg.SensorEvaluationContext, mlflow: MlflowResource
) -> dg.SensorResult | dg.SkipReason:
    from mlflow.exceptions import MlflowException

    from aiplatform_dagster.mlops.registry import ModelRegistry

    target = mlflow.target()
    registry = ModelRegistry(target.client())
    prefix = target.model_prefix
    try:
        models = registry.models(prefix)
        moves = [move for name in models for move in registry.moves(name)]
    except MlflowException as error:
        return dg.SkipReason(f"MLflow at {target.tracking_uri} is unreachable: {error}")
    new = sorted((m for m in moves if m.at > (context.cursor or "")), key=lambda m: m.at)
    if not new:
        return dg.SkipReason("No alias moved since the last report")
    events = []
    for move in new:
        aliases = models[move.model]
        events.append(
            dg.AssetMaterialization(
                asset_key=model_registry.key,
                description=f"{move.model}@{move.alias}: {move.from_version or 'none'} -> "
                f"{move.to_version} ({move.kind.value}): {move.reason}",
                metadata={
                    "model": move.model,
                    "alias": move.alias,
                    "from_version": move.from_version or "none",
                    "to_version": move.to_version,
                    "kind": move.kind.value,
                    "reason": move.reason,
                    "moved_by": move.by,
                    "moved_at": move.at,
                    "aliases_now": dg.MetadataValue.json(aliases),
                    "mlflow_model": dg.MetadataValue.url(
                        target.model_url(move.model, move.to_version)
                    ),
                },
            )
        )
    return dg.SensorResult(asset_events=events, cursor=new[-1].at)
