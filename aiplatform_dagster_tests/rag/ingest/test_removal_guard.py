"""A run that would remove most documents (an unmounted volume) is refused, not executed."""

import pytest

from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.rag.ingest.removal_guard import MassRemovalError, check_removal

PREVIOUS = {f"doc{i}.md" for i in range(10)}


def test_an_empty_folder_is_refused_with_counts_folder_and_switch() -> None:
    with pytest.raises(MassRemovalError) as raised:
        check_removal(PREVIOUS, set(), folder="/mnt/documents")
    message = str(raised.value)
    assert "10 of 10" in message
    assert "/mnt/documents" in message
    assert "allow_mass_removal" in message
    assert isinstance(raised.value, PlatformError)


def test_removing_more_than_the_share_is_refused() -> None:
    kept = set(sorted(PREVIOUS)[:4])
    with pytest.raises(MassRemovalError, match="6 of 10"):
        check_removal(PREVIOUS, kept | {"new.md"}, folder="docs")


def test_removing_up_to_the_share_passes() -> None:
    kept = set(sorted(PREVIOUS)[:5])
    check_removal(PREVIOUS, kept, folder="docs")


def test_the_share_is_configurable() -> None:
    kept = set(sorted(PREVIOUS)[:8])
    check_removal(PREVIOUS, kept, folder="docs")
    with pytest.raises(MassRemovalError, match="2 of 10"):
        check_removal(PREVIOUS, kept, folder="docs", max_share=0.1)


def test_the_switch_allows_any_removal() -> None:
    check_removal(PREVIOUS, set(), folder="docs", allow=True)


def test_a_first_ingestion_never_refuses() -> None:
    check_removal(set(), set(), folder="docs")
    check_removal(set(), {"a.md"}, folder="docs", max_share=0.0)


def test_a_share_outside_zero_to_one_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"max_share.*between 0 and 1"):
        check_removal(PREVIOUS, PREVIOUS, folder="docs", max_share=1.5)
