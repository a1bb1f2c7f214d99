"""Dagster definitions, one folder per asset group, loaded by ``load_from_defs_folder``."""
