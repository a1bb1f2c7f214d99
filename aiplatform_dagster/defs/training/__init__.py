"""The training group: models the query path uses, trained, registered in MLflow and gated."""
