"""Scale-out ingestion: one build's embedding split into shards, one run per shard."""
