"""Tests of the RAG domain code."""
