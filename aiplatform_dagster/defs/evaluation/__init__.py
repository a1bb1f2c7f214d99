"""The evaluation group: retrieval quality and answer quality, tracked over time."""
