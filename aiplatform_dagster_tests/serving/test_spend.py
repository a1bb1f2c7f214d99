"""The local month-to-date spend ledger: tallied in the process, written in one transaction
each interval, on read and at exit, and never losing spend to a failed write."""

import gc
from pathlib import Path

import pytest

from aiplatform_dagster.serving.spend import LocalSpend


def test_spend_is_written_on_read_on_its_interval_and_when_the_ledger_goes(tmp_path: Path) -> None:
    path = tmp_path / "spend.sqlite"
    replica, reader = LocalSpend(path, flush_s=3600), LocalSpend(path, flush_s=3600)
    assert replica.add(0.5)
    assert reader.month_to_date() == 0.0  # still tallied in the replica's process
    assert replica.month_to_date() == pytest.approx(0.5)  # a read writes its own tally first
    assert reader.month_to_date() == pytest.approx(0.5)

    replica.add(0.25)
    del replica
    gc.collect()  # the process ends or the ledger is dropped: its tally is written
    assert reader.month_to_date() == pytest.approx(0.75)

    every_time = LocalSpend(path, flush_s=0)
    every_time.add(1.0)
    assert reader.month_to_date() == pytest.approx(1.75)


def test_a_failed_write_keeps_the_spend_for_the_next_one(tmp_path: Path) -> None:
    path = tmp_path / "spend.sqlite"
    ledger = LocalSpend(path, flush_s=0)
    ledger.add(0.5)
    for file in tmp_path.iterdir():
        file.unlink()
    path.write_bytes(b"this is not a database" * 100)

    assert ledger.add(0.25) is False  # the caller counts the failure
    assert ledger.month_to_date() is None

    path.unlink()
    LocalSpend(path)  # the file is back, empty
    assert ledger.month_to_date() == pytest.approx(0.25)  # nothing of the failed write is lost
