"""Drift monitoring: a log of every query's features, and the statistics that compare a window
of it with a reference. Plain Python, no Dagster: the query path, the CLI and the serving API
use it as they are, and ``defs/monitoring/`` only schedules it."""
