"""Tests of retrieval evaluation: metrics, latency and BEIR datasets."""
