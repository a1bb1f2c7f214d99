"""Tests of the Dagster definitions, run in-process against real storage."""
