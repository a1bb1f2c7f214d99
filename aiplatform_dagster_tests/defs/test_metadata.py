"""Metadata the UI shows as pictures rather than lists of numbers."""

from aiplatform_dagster.defs.metadata import histogram


def test_histogram_counts_every_value_in_its_range_and_draws_the_largest_bar_full() -> None:
    text = histogram([10, 11, 12, 19, 20, 40], bins=4, width=10).value
    rows = [line.split("|")[1:4] for line in text.splitlines()[2:]]
    counts = {cells[0].strip(): int(cells[1]) for cells in rows}
    assert counts == {"10–17": 3, "18–25": 2, "26–33": 0, "34–41": 1}
    assert rows[0][2].strip() == "█" * 10
    assert sum(counts.values()) == 6


def test_histogram_of_nothing_says_so() -> None:
    assert histogram([]).value == "_(none)_"
