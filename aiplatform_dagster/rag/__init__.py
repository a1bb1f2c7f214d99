"""RAG domain code: documents, chunking, embedding, indexes and the query path. No Dagster here."""
