"""checkov over the infrastructure as it is deployed, offline: terraform/ as is and with the
production variables, and the Kubernetes manifests the cluster really gets (each chart in
k8s/charts/ rendered by Helm's own library with each values file, as the chart tests render
them, and the Dagster run and step Jobs that dagster-k8s builds from k8s/dagster/). Every
skipped check is listed, with its reason, in the root ``.checkov.yaml``, and a skip whose check
no longer fails anywhere is stale.

checkov lives in its own virtualenv (its pins clash with the project's): see ``INSTALL``.
"""

import json
import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiplatform_dagster.defs.compute import PROFILES
from aiplatform_dagster_tests.infra import charts, test_dagster_helm_values
from aiplatform_dagster_tests.infra.kubernetes import PROJECT_ROOT, TERRAFORM_DIR

pytestmark = pytest.mark.slow

CHECKOV_VERSION = re.search(
    r"^CHECKOV_VERSION := (\S+)$", (PROJECT_ROOT / "Makefile").read_text(), re.MULTILINE
).group(1)
"""The Makefile pins checkov (`make test` makes its virtualenv)."""
VENV = ".venv-checkov"
INSTALL = f"make {VENV}/bin/checkov (or: rm -r {VENV} first, to recreate it)"
"""How the checkov virtualenv is made, from the project root."""
CHECKOV = Path(os.environ.get("AIPLATFORM_TEST_CHECKOV") or PROJECT_ROOT / VENV / "bin" / "checkov")
CONFIG = PROJECT_ROOT / ".checkov.yaml"
PRODUCTION_VARS = TERRAFORM_DIR / "environments" / "production.tfvars"
TIMEOUT_S = 300

SKIP_ENTRY = re.compile(r"^\s*-\s*(?P<id>[A-Z0-9_]+)\s*(?:#\s*(?P<reason>.*?))?\s*$")


def skip_entries() -> dict[str, str]:
    """Each skipped check id in .checkov.yaml, with the reason on its line ('' if none)."""
    entries: dict[str, str] = {}
    for line in CONFIG.read_text().splitlines():
        match = SKIP_ENTRY.match(line)
        if match:
            assert match["id"] not in entries, f"{match['id']} is listed twice"
            entries[match["id"]] = match["reason"] or ""
    return entries


def skipped_ids() -> list[str]:
    """The skip-check list exactly as checkov reads it from the YAML."""
    skips = yaml.safe_load(CONFIG.read_text())["skip-check"]
    return skips.split(",") if isinstance(skips, str) else list(skips)


OFFLINE_KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:1"}}],
    "users": [{"name": "offline", "user": {"token": "unused"}}],
    "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}],
    "current-context": "offline",
}
"""dagster-k8s builds the Jobs with a client that is never used: nothing is sent."""


def write_manifests(folder: Path) -> None:
    """The manifests the cluster gets: each chart's release with each of its values files,
    and the Dagster run and step (one per compute profile) Jobs of each environment."""

    def write(path: str, manifests: Iterable[Mapping[str, Any]]) -> None:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(yaml.safe_dump_all([dict(m) for m in manifests]))

    for chart in charts.ALL:
        for values_file in chart.values_files:
            write(f"{chart.release}/{values_file}", chart.rendered(values_file))

    kubeconfig = folder.parent / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(OFFLINE_KUBECONFIG))
    dagster = test_dagster_helm_values
    for environment in dagster.ENVIRONMENTS:
        values = dagster.chart_values(environment)
        launcher = dagster.run_launcher(values, kubeconfig)
        jobs = {"run": dagster.run_job(values, launcher)}
        jobs |= {f"step-{p}": dagster.step_job(values, launcher, p) for p in PROFILES}
        for name, job in jobs.items():
            # dagster-k8s creates each Job in the launcher's namespace, not in its manifest.
            job["metadata"]["namespace"] = launcher.job_namespace
            write(f"dagster/{environment}-{name}.yaml", [job])


@dataclass(frozen=True)
class Scan:
    """One checkov scan: a framework over a directory."""

    framework: str
    directory: Path
    extra: tuple[str, ...] = ()

    def command(self, checks: Sequence[str] = ()) -> list[str]:
        only = ["--check", ",".join(checks)] if checks else []
        return [
            str(CHECKOV),
            *("--framework", self.framework, "--directory", str(self.directory)),
            *self.extra,
            *only,
            *("--skip-download", "--output", "json", "--quiet"),
        ]


def offline_env(home: Path) -> dict[str, str]:
    """No Prisma Cloud key, no update check, and any HTTP(S) request refused locally."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BC_", "CKV_", "PRISMA_")) and "proxy" not in key.lower()
    }
    dead_end = "http://127.0.0.1:9"
    return env | {
        "HOME": str(home),  # no ~/.checkov.yaml of whoever runs the tests
        "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
        "BC_SKIP_MAPPING": "TRUE",
        "HTTP_PROXY": dead_end,
        "HTTPS_PROXY": dead_end,
        "http_proxy": dead_end,
        "https_proxy": dead_end,
    }


def reports(stdout: str) -> list[dict[str, Any]]:
    """checkov's JSON: one report, or a list of them."""
    parsed = json.loads(stdout)
    return parsed if isinstance(parsed, list) else [parsed]


def run_all(runs: Mapping[str, tuple[list[str], Path]], env: Mapping[str, str]) -> dict[str, Any]:
    """The runs side by side, each its own checkov process."""
    processes = {
        name: subprocess.Popen(
            command, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for name, (command, cwd) in runs.items()
    }
    try:
        outputs = {
            name: process.communicate(timeout=TIMEOUT_S) for name, process in processes.items()
        }
    finally:
        for process in processes.values():
            process.kill()  # only those still running, after a timeout
    for name, (_, stderr) in outputs.items():
        # 0: all passed, 1: something failed; anything else is checkov itself failing.
        code = processes[name].returncode
        assert code in (0, 1), f"checkov ({name}) exited {code}:\n{stderr.decode()[-3000:]}"
    return {name: reports(stdout.decode()) for name, (stdout, _) in outputs.items()}


@dataclass(frozen=True)
class Results:
    deployed: dict[str, list[dict[str, Any]]]
    """Each scan with .checkov.yaml, as CI and a person run it from the project root."""
    unskipped: dict[str, list[dict[str, Any]]]
    """Each scan with no configuration, running only the skipped checks."""
    manifests: Path


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    """The three scans, each with .checkov.yaml and, for stale skips, without it."""
    if not os.access(CHECKOV, os.X_OK):
        pytest.fail(
            f"checkov is not installed at {CHECKOV}. It has its own virtualenv, because its "
            f"pins clash with the project's; from {PROJECT_ROOT} run:\n    {INSTALL}\n"
            "(or point AIPLATFORM_TEST_CHECKOV at a checkov executable)",
            pytrace=False,
        )
    manifests = tmp_path_factory.mktemp("checkov") / "manifests"
    write_manifests(manifests)
    scans = {
        "terraform": Scan("terraform", TERRAFORM_DIR),
        "terraform, production.tfvars": Scan(
            "terraform", TERRAFORM_DIR, ("--var-file", str(PRODUCTION_VARS))
        ),
        "kubernetes": Scan("kubernetes", manifests),
    }
    elsewhere = tmp_path_factory.mktemp("no-config")  # holds no .checkov.yaml
    runs = {f"deployed {name}": (scan.command(), PROJECT_ROOT) for name, scan in scans.items()}
    runs |= {
        f"unskipped {name}": (scan.command(skipped_ids()), elsewhere)
        for name, scan in scans.items()
    }
    ran = run_all(runs, offline_env(elsewhere))
    return Results(
        deployed={name: ran[f"deployed {name}"] for name in scans},
        unskipped={name: ran[f"unskipped {name}"] for name in scans},
        manifests=manifests,
    )


def failed_checks(scan_reports: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for report in scan_reports:
        yield from report.get("results", {}).get("failed_checks", [])


def describe(check: Mapping[str, Any], manifests: Path) -> str:
    path = Path(check["file_abs_path"])
    for root in (manifests, PROJECT_ROOT):
        if path.is_relative_to(root):
            path = path.relative_to(root)
            break
    return f"{check['check_id']} {check['resource']} in {path}: {check['check_name']}"


def test_every_skip_in_the_config_states_its_reason() -> None:
    entries = skip_entries()
    assert sorted(entries) == sorted(skipped_ids()), "an entry checkov reads is not one line"
    unexplained = [check for check, reason in entries.items() if len(reason.split()) < 4]
    assert not unexplained, f"skipped without a reason on the same line: {unexplained}"


@pytest.mark.parametrize("scan", ["terraform", "terraform, production.tfvars", "kubernetes"])
def test_checkov_passes(results: Results, scan: str) -> None:
    [report] = [r for r in results.deployed[scan] if r.get("check_type") == scan.split(",")[0]]
    summary = report["summary"]
    assert summary["checkov_version"] == CHECKOV_VERSION, f"recreate {VENV}: {INSTALL}"
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] > 0 and summary["passed"] > 0
    failures = sorted(describe(c, results.manifests) for c in failed_checks([report]))
    assert not failures, (
        f"checkov ({scan}) failed {len(failures)} checks; fix them, or skip one in "
        ".checkov.yaml with the reason:\n" + "\n".join(failures)
    )


def test_the_kubernetes_scan_covers_every_release_and_job(results: Results) -> None:
    written = {p.relative_to(results.manifests).as_posix() for p in results.manifests.rglob("*")}
    assert {
        f"{chart.release}/{name}" for chart in charts.ALL for name in chart.values_files
    } <= written
    assert {f"dagster/production-step-{profile}.yaml" for profile in PROFILES} <= written
    objects = [
        document
        for path in results.manifests.rglob("*.yaml")
        for document in yaml.safe_load_all(path.read_text())
    ]
    assert {"Deployment", "Job", "NetworkPolicy", "Service"} <= {o["kind"] for o in objects}
    [report] = results.deployed["kubernetes"]
    assert report["summary"]["resource_count"] >= len(objects)  # every object was read


def test_every_skipped_check_still_fails_without_its_skip(results: Results) -> None:
    """A skip whose check passes everywhere (or no longer exists) hides nothing: remove it."""
    failing = {
        check["check_id"]
        for scan_reports in results.unskipped.values()
        for check in failed_checks(scan_reports)
    }
    stale = sorted(set(skipped_ids()) - failing)
    assert not stale, f"stale skips in .checkov.yaml, these checks fail nowhere: {stale}"
