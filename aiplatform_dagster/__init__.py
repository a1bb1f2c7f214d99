"""aiplatform-dagster: a Dagster code location for a RAG system, agent workflows and MLOps."""
