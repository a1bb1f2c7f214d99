"""The ingestion group: documents -> chunks -> embeddings + BM25 -> vector index."""
