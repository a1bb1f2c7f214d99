"""The writer lock within one process: one writer per lock file, and a writer may hold two."""

import threading
from pathlib import Path

import pytest

from aiplatform_dagster.rag.index.lock import LockTimeout, writer_lock


def test_a_writer_holding_one_lock_can_take_another(tmp_path: Path) -> None:
    """Before, one thread lock served every file: this raised LockTimeout after 1 s."""
    with (
        writer_lock(tmp_path / "serving.lock", 1.0, "flip"),
        writer_lock(tmp_path / "index.lock", 1.0, "hold the release"),
    ):
        (tmp_path / "flipped").touch()
    assert (tmp_path / "flipped").exists()


def test_a_second_writer_in_the_same_process_waits_and_times_out(tmp_path: Path) -> None:
    lock = tmp_path / "writer.lock"
    errors: list[Exception] = []

    def second_writer() -> None:
        try:
            with writer_lock(lock, 0.2, "second"):
                pass
        except LockTimeout as error:
            errors.append(error)

    with writer_lock(lock, 1.0, "first"):
        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join()
    assert len(errors) == 1 and "another writer" in str(errors[0])
    with writer_lock(lock, 0.2, "after"):  # released: the next writer gets it at once
        pass


def test_the_same_file_through_another_path_is_the_same_lock(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    with (
        writer_lock(tmp_path / "writer.lock", 1.0, "first"),
        pytest.raises(LockTimeout),
        writer_lock(tmp_path / "sub" / ".." / "writer.lock", 0.1, "second"),
    ):
        pass
