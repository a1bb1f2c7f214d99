"""Retrieval evaluation: IR metrics, latency percentiles and BEIR-format datasets."""
