"""Reading what a materialisation recorded, as a test asserts on it."""

import dagster as dg


def values(result: dg.ExecuteInProcessResult, asset: dg.AssetsDefinition) -> dict:
    """The metadata of ``asset``'s one materialisation in ``result``, as plain values."""
    [event] = result.asset_materializations_for_node(asset.node_def.name)
    return {key: value.value for key, value in event.metadata.items()}
