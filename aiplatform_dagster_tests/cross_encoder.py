"""A real cross-encoder built offline for the tests: no reranker weights can be downloaded.

The packaged MiniLM gets a fresh one-logit head and is fine-tuned for a few deterministic
steps on (query, relevant, irrelevant) triples with sentence-transformers' own training loop.
"""

import os
from pathlib import Path

import pytest

from aiplatform_dagster.models.embedders import packaged_minilm_path

TRIPLES = [
    ("how do I rotate the redis password",
     "Rotate the Redis password with the secrets job, then restart the API pods.",
     "The cafeteria serves lunch from noon until two."),
    ("what is bm25",
     "BM25 ranks documents by term frequency and inverse document frequency.",
     "Our office plants are watered every Tuesday."),
    ("how to reset my vpn token",
     "Reset your VPN token from the self-service portal under Security.",
     "The quarterly offsite will be held in Lisbon."),
    ("where are embeddings cached",
     "Embeddings are cached in Redis so repeated queries are cheap.",
     "The parking garage closes at midnight."),
    ("how often is the vector index rebuilt",
     "The vector index is rebuilt nightly by a Dagster asset.",
     "Bring your own mug to reduce paper cup waste."),
    ("what does the reranker do",
     "The reranker reorders the top search results with a cross-encoder.",
     "Holiday requests must be approved by your manager."),
    ("how is search quality measured",
     "Search quality is measured with recall and nDCG on a golden set.",
     "The coffee machine on floor three is broken."),
    ("what is reciprocal rank fusion",
     "Reciprocal rank fusion merges keyword and vector result lists by rank.",
     "Team photos are taken every spring."),
    ("how are documents chunked",
     "Chunking splits long documents into overlapping passages before indexing.",
     "The gym offers yoga classes on Fridays."),
    ("which database stores the vectors",
     "Weaviate stores the vectors; FAISS serves the local fallback.",
     "New laptops arrive in the second week of the month."),
    ("how do I request a new laptop",
     "Request a new laptop through the IT hardware form; delivery takes a week.",
     "BM25 saturates repeated terms in a document."),
    ("what is the expense limit for travel",
     "Travel expenses up to 500 USD per trip need no extra approval.",
     "Dense retrieval embeds queries into a vector space."),
    ("when does the cafeteria open",
     "The cafeteria serves breakfast from eight and lunch from noon.",
     "The ingestion job writes chunks to Parquet files."),
    ("how do I book a meeting room",
     "Book meeting rooms in the calendar app by adding the room as a guest.",
     "Stemming maps indexing and indexed to one term."),
    ("who approves holiday requests",
     "Holiday requests are approved by your direct manager in the HR portal.",
     "Query latency is dominated by the reranker."),
    ("how to deploy the api",
     "Deploy the API with the release pipeline after the tests pass.",
     "Plants in the lobby are replaced each season."),
    ("what port does postgres use",
     "PostgreSQL listens on port 5432 by default.",
     "The annual party is in December."),
    ("how do I report a security incident",
     "Report security incidents to the security team via the incident form within one hour.",
     "The library lends books for two weeks."),
    ("what is the wifi password for guests",
     "Guests get the Wi-Fi password from reception each morning.",
     "Cross-encoders score a query and passage jointly."),
    ("how do I clear the response cache",
     "Clear the response cache by deleting its keys under the cache prefix in Redis.",
     "The marketing team meets on Mondays."),
]  # fmt: skip


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real cross-encoder: MiniLM plus a new head, fine-tuned for 10 steps on CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import CrossEncoder, InputExample
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    model = CrossEncoder(packaged_minilm_path(), num_labels=1, device="cpu")
    # Training only the top two layers and the head keeps this well under a minute on two CPU cores.
    bert = model.model.bert
    for module in [bert.embeddings, *bert.encoder.layer[:4]]:
        module.requires_grad_(False)
    examples = [InputExample(texts=[q, relevant], label=1.0) for q, relevant, _ in TRIPLES]
    examples += [InputExample(texts=[q, irrelevant], label=0.0) for q, _, irrelevant in TRIPLES]
    loader = DataLoader(
        examples, shuffle=True, batch_size=8, generator=torch.Generator().manual_seed(0)
    )
    # CrossEncoderTrainer needs the datasets and accelerate packages, which are not
    # installed; old_fit is the same library's training loop without them.
    model.old_fit(
        loader, epochs=2, warmup_steps=2, optimizer_params={"lr": 1e-3}, show_progress_bar=False
    )
    folder = tmp_path_factory.mktemp("cross-encoder")
    model.save_pretrained(str(folder))
    return folder
