"""Environment-driven defaults shared by the Dagster resources and the CLI.

One source of configuration: every knob has a default that works on a laptop and an
environment variable that the production profile sets. Secrets are read from the
environment only, never from files in the repository.
"""

import os
from pathlib import Path

SAMPLE_CORPUS_DIR = Path(__file__).resolve().parent / "sample_corpus"


def storage_dir() -> Path:
    """Where materialised artifacts (chunks, embeddings, indexes) live."""
    return Path(os.environ.get("AIPLATFORM_STORAGE_DIR", Path.cwd() / "storage")).resolve()


def documents_dir() -> Path:
    """The folder ingestion reads; the shipped sample corpus unless configured."""
    return Path(os.environ.get("AIPLATFORM_DOCUMENTS_DIR", SAMPLE_CORPUS_DIR)).resolve()
