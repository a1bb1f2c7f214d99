"""The serving API: FastAPI over the live index release and the agent runtime; no Dagster import."""
