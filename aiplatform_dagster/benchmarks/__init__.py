"""Micro-benchmarks of the retrieval code; functions return numbers, runners print them."""
