"""A storage folder with the sample release published for serving, shared by the API tests."""

import shutil
from pathlib import Path

import pytest

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.rag.index.releases import IndexRepository
from aiplatform_dagster.serving.publish import publish_serving_release
from aiplatform_dagster.serving.release import ServingManifest


@pytest.fixture(scope="session")
def published(
    sample_repository: IndexRepository, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, ServingManifest]:
    """A copy of the sample storage with its first serving release live (as `make ingest`
    leaves it): the storage folder and the live manifest."""
    storage = tmp_path_factory.mktemp("published") / "storage"
    shutil.copytree(sample_repository.root, storage / "ingestion")
    settings = load_settings(
        {"AIPLATFORM_STORAGE_DIR": str(storage), "AIPLATFORM_MONITORING_QUERY_LOG": "false"}
    )
    publication = publish_serving_release(settings, "test fixture")
    assert publication.flip is not None, publication.decision
    return storage, publication.manifest


@pytest.fixture
def storage(published: tuple[Path, ServingManifest], tmp_path: Path) -> Path:
    """A copy of the published storage for one test: what the API writes there (audit log,
    spend ledger) stays with the test."""
    copy = tmp_path / "storage"
    shutil.copytree(published[0], copy)
    return copy
