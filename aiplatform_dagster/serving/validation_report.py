"""What ``aiplatform validate`` found: one ``Check`` per threshold (measured, threshold, pass or
FAIL), shown as a table a person reads in a deploy log and written as JSON for the workflow."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Check:
    key: str
    """The thresholds file's key this check applies, e.g. ``retrieval.min_ndcg``."""
    name: str
    """How the table names it, e.g. ``retrieval nDCG@10``."""
    measured: float | bool | None
    """None when nothing could be measured (then the check fails)."""
    shown: str
    threshold: str
    limit: float | None
    passed: bool
    details: list[str] = field(default_factory=list)
    """Why it failed, one line each (a failed smoke query, an error), or what it measured."""


def at_least(key: str, name: str, measured: float | None, limit: float) -> Check:
    shown = "no answer scored" if measured is None else f"{measured:.4f}"
    passed = measured is not None and measured >= limit
    return Check(key, name, measured, shown, f">= {limit:g}", limit, passed)


def at_most_ms(key: str, name: str, measured: float | None, limit: float | None) -> Check:
    """A latency percentile against its limit; a limit left out of the file is reported only."""
    shown = "no successful request" if measured is None else f"{measured:.0f} ms"
    threshold = "(not set)" if limit is None else f"<= {limit:g} ms"
    passed = measured is not None and (limit is None or measured <= limit)
    return Check(key, name, measured, shown, threshold, limit, passed)


def error_rate_check(errors: list[str | None], total: int, limit: float) -> Check:
    """The share of requests answered with no 2xx, and the first few distinct errors."""
    rate = len(errors) / total if total else 0.0
    shown = f"{rate:.4f} ({len(errors)}/{total})"
    details = sorted(set(str(error) for error in errors))[:5]
    return Check(
        "max_error_rate", "error rate", rate, shown, f"<= {limit:g}", limit, rate <= limit, details
    )


def all_passed(key: str, name: str, verb: str, failures: list[str], total: int) -> Check:
    """A suite that passes only when every item does; each failure named."""
    shown = f"{total - len(failures)}/{total} {verb}"
    return Check(
        key, name, float(total - len(failures)), shown, "all", float(total), not failures, failures
    )


@dataclass(frozen=True)
class ValidationReport:
    endpoint: str
    thresholds_file: str
    golden: str
    release_id: str | None
    index_release: str | None
    checks: list[Check]
    requests: dict[str, int]
    """How many requests each part sent: evaluation, repeated, smoke_queries, agent_tasks."""
    latency_ms: dict[str, float]
    queries: list[dict[str, Any]]
    """Each evaluation query: id, HTTP status, milliseconds, the documents its answer ranked."""

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[str]:
        """One sentence per broken threshold, naming its key."""
        return [
            f"{check.key}: {check.name} {check.shown}, threshold {check.threshold}"
            + "".join(f"\n    {detail}" for detail in check.details)
            for check in self.checks
            if not check.passed
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "thresholds_file": self.thresholds_file,
            "golden": self.golden,
            "release_id": self.release_id,
            "index_release": self.index_release,
            "passed": self.passed,
            "checks": [asdict(check) for check in self.checks],
            "failures": self.failures,
            "requests": self.requests,
            "latency_ms": self.latency_ms,
            "queries": self.queries,
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")

    def table(self) -> str:
        """The report as text: what was judged, one row per check, then what broke."""
        served = f"release {self.release_id or '?'} (index {self.index_release or '?'})"
        header = ("check", "measured", "threshold", "result")
        rows = [(c.name, c.shown, c.threshold, "pass" if c.passed else "FAIL") for c in self.checks]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
        lines = [
            f"aiplatform validate: {self.endpoint}, {served}",
            f"thresholds {self.thresholds_file}; golden set {self.golden}",
            "",
        ]
        for row in [header, *rows]:
            lines.append(
                "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
                + "  "
                + row[3]
            )
        lines.append("")
        failures = self.failures
        if not failures:
            lines.append(f"all {len(self.checks)} checks passed")
        else:
            lines.extend(f"FAILED: {failure}" for failure in failures)
            lines.append(f"{len(failures)} of {len(self.checks)} checks failed")
        return "\n".join(lines)
