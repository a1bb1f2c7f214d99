"""Tests for aiplatform_dagster; the layout mirrors the package."""
