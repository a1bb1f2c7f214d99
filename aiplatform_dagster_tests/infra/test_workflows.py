"""The delivery pipeline (.github/workflows/ and the scripts in k8s/deploy/ they run), checked
offline: each workflow against GitHub's workflow schema (check-jsonschema's bundled copy) and
zizmor's audits; every action pinned by commit; the deploy and infrastructure workflows doing
what the issue asks, in the right order; no secret anywhere but in ``${{ secrets.X }}``.

The scripts run here too, for real, with the programs they drive (``az``, ``helm``, ``docker``,
``curl``) replaced by recording stand-ins on PATH (no registry, cluster or Slack is reachable):
what they would be asked to do is checked, and the API chart is rendered by Helm's own library
with exactly the values the deploy script passes.
"""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiplatform_dagster_tests.infra.helm import merged, render_chart
from aiplatform_dagster_tests.infra.kubernetes import PROJECT_ROOT

WORKFLOWS_DIR = PROJECT_ROOT / ".github" / "workflows"
ZIZMOR_CONFIG = PROJECT_ROOT / ".github" / "zizmor.yml"
DEPLOY_DIR = PROJECT_ROOT / "k8s" / "deploy"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.yml"))
ENVIRONMENTS = ("staging", "production")
INSTALL_HINT = "pip install -e '.[dev]'"

SHA_PIN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[^@\s]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+\.\d+\.\d+\s*$")
DIGEST_PIN = re.compile(r"@sha256:[0-9a-f]{64}$")
SCRIPT_CALL = re.compile(r"(?<![\w./-])((?:k8s/deploy|\.ci)/[\w./-]+)")
VALIDATE = re.compile(
    r"aiplatform validate --endpoint \S+ --thresholds k8s/validation/thresholds-(\w+)\.yaml"
)
SECRET_REFERENCE = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
SECRET_LITERALS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"),
    "Slack webhook or token": re.compile(
        r"hooks\.slack\.com/services/[A-Za-z0-9/]+|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    ),
    "Azure storage or service bus key": re.compile(
        r"(?:AccountKey|SharedAccessKey|SharedAccessSignature)=[A-Za-z0-9+/=%]{20,}"
    ),
    "Azure client secret": re.compile(r"\b[A-Za-z0-9_~.-]{3}8Q~[A-Za-z0-9_~.-]{31,34}\b"),
    "JSON web token": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\."),
    "password in a URL": re.compile(r"://[^/\s:@${}]+:[^/\s:@${}]+@"),
    "GUID (a tenant, subscription or client id belongs in a secret or variable)": re.compile(
        r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE
    ),
}
SECRET_LIKE_NAME = re.compile(r"(KEY|SECRET|PASSWORD|TOKEN|WEBHOOK|CREDENTIAL)", re.IGNORECASE)
NOT_SECRETS = {"persist-credentials", "ARM_USE_OIDC"}
"""Settings whose names look secret but whose values are switches."""


# --------------------------------------------------------------------------------------------
# Reading the workflows
# --------------------------------------------------------------------------------------------


def load(name: str) -> dict[str, Any]:
    """A workflow as GitHub reads it. YAML 1.1 reads the key ``on`` as True: put it back."""
    document = yaml.safe_load((WORKFLOWS_DIR / name).read_text())
    if True in document:
        document["on"] = document.pop(True)
    return document


def jobs(workflow: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return workflow["jobs"]


def steps(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    return job.get("steps", [])


def runs(job: Mapping[str, Any]) -> list[str]:
    return [step["run"] for step in steps(job) if "run" in step]


def step_index(job: Mapping[str, Any], pattern: str) -> int:
    """The index of the one step whose run: matches ``pattern``."""
    found = [i for i, step in enumerate(steps(job)) if re.search(pattern, step.get("run", ""))]
    assert len(found) == 1, f"expected one step running {pattern!r}, found {len(found)}"
    return found[0]


def uses(workflow: Mapping[str, Any]) -> Iterator[str]:
    for job in jobs(workflow).values():
        if "uses" in job:  # a reusable workflow
            yield job["uses"]
        for step in steps(job):
            if "uses" in step:
                yield step["uses"]


def environment_name(job: Mapping[str, Any]) -> str | None:
    environment = job.get("environment")
    return environment.get("name") if isinstance(environment, Mapping) else environment


def tool(name: str) -> str:
    """A dev-extras command: next to this interpreter first, then on PATH; never skipped."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT}")
    return found


def test_there_are_the_three_workflows() -> None:
    assert {"ci.yml", "deploy.yml", "infra.yml"} <= {path.name for path in WORKFLOWS}


# --------------------------------------------------------------------------------------------
# (a) GitHub's workflow schema; (b) zizmor
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_workflow_matches_githubs_schema(workflow: Path) -> None:
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def zizmor(*options: str) -> list[dict[str, Any]]:
    """zizmor's findings over .github/, offline, with every audit (the auditor persona)."""
    result = subprocess.run(
        [
            tool("zizmor"),
            "--offline",
            "--strict-collection",
            "--persona",
            "auditor",
            "--config",
            str(ZIZMOR_CONFIG),
            "--format",
            "json",
            *options,
            ".github/",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip(), f"zizmor printed no report (exit {result.returncode}):\n" + (
        result.stderr
    )
    findings = json.loads(result.stdout)
    # No finding means exit 0; findings mean exit 10 and up (the worst severity).
    assert (result.returncode == 0) == (not findings) or options, result.stderr
    return findings


def describe_finding(finding: Mapping[str, Any]) -> str:
    places = []
    for location in finding["locations"]:
        symbolic, concrete = location["symbolic"], location["concrete"]
        path = symbolic["key"]["Local"]["verbatim_path"]
        row = concrete["location"]["start_point"]["row"] + 1
        places.append(f"{path}:{row} ({symbolic['annotation']}): {concrete['feature']!r}")
    severity = finding["determinations"]["severity"]
    return f"{finding['ident']} [{severity}] {finding['desc']}\n    " + "\n    ".join(places)


def test_zizmor_reports_no_finding() -> None:
    """Fixed, or ignored with its reason in .github/zizmor.yml: nothing else may remain."""
    findings = [finding for finding in zizmor() if not finding.get("ignored")]
    assert not findings, "zizmor findings:\n" + "\n".join(map(describe_finding, findings))


def zizmor_ignores() -> dict[str, list[str]]:
    rules = yaml.safe_load(ZIZMOR_CONFIG.read_text()).get("rules") or {}
    return {rule: list(config.get("ignore") or []) for rule, config in rules.items()}


def test_each_zizmor_ignore_is_justified_and_still_needed() -> None:
    """Every ignore entry has a comment saying why, and still hides a real finding."""
    lines = ZIZMOR_CONFIG.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s*-\s", line):
            previous = lines[number - 1].strip()
            assert "#" in line or previous.startswith("#"), f"no reason given for {line.strip()}"
    everything = zizmor("--no-ignores")
    for rule, entries in zizmor_ignores().items():
        for entry in entries:
            file = entry.split(":")[0]
            hidden = [
                finding
                for finding in everything
                if finding["ident"] == rule
                and any(
                    Path(place["symbolic"]["key"]["Local"]["verbatim_path"]).name == file
                    for place in finding["locations"]
                )
            ]
            assert hidden, f"stale ignore in {ZIZMOR_CONFIG.name}: {rule} {entry} hides nothing"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_no_finding_is_silenced_inside_a_workflow(workflow: Path) -> None:
    """Justifications live in one file, .github/zizmor.yml, not in inline comments."""
    assert "zizmor: ignore" not in workflow.read_text()


# --------------------------------------------------------------------------------------------
# (c) pinning; hygiene zizmor also checks, asserted here by name
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_every_action_is_pinned_by_commit_with_its_version(workflow: Path) -> None:
    text = workflow.read_text()
    for reference in uses(load(workflow.name)):
        if reference.startswith("./"):
            continue
        if reference.startswith("docker://"):
            assert DIGEST_PIN.search(reference), f"{reference} is not pinned by digest"
            continue
        assert SHA_PIN.match(reference), f"{reference} is not pinned by a full commit SHA"
        for line in text.splitlines():
            if reference in line:
                assert VERSION_COMMENT.search(line), f"no '# vX.Y.Z' comment: {line.strip()}"


def test_each_action_is_pinned_to_one_commit_everywhere() -> None:
    pins: dict[str, set[str]] = {}
    for workflow in WORKFLOWS:
        for reference in uses(load(workflow.name)):
            action, _, ref = reference.partition("@")
            pins.setdefault(action, set()).add(ref)
    assert {action: refs for action, refs in pins.items() if len(refs) > 1} == {}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_container_images_are_pinned_by_digest(workflow: Path) -> None:
    for name, job in jobs(load(workflow.name)).items():
        containers = [job.get("container"), *(job.get("services") or {}).values()]
        for container in filter(None, containers):
            image = container["image"] if isinstance(container, Mapping) else container
            assert DIGEST_PIN.search(image), f"{workflow.name} {name}: {image} has no digest"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_permissions_are_minimal_per_job(workflow: Path) -> None:
    """Nothing at the workflow level; each job reads contents, and asks for an OIDC token only
    when it signs in to Azure (azure/login, or terraform's own OIDC sign-in)."""
    document = load(workflow.name)
    assert document["permissions"] == {}
    for name, job in jobs(document).items():
        permissions = job.get("permissions")
        assert isinstance(permissions, Mapping), f"{name} sets no permissions of its own"
        signs_in = any(ref.startswith("azure/login@") for ref in uses({"jobs": {name: job}}))
        signs_in |= any("terraform.sh" in run for run in runs(job))
        expected = {"contents": "read", **({"id-token": "write"} if signs_in else {})}
        assert permissions == expected, f"{workflow.name} {name}: {permissions}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_checkouts_do_not_persist_credentials(workflow: Path) -> None:
    for name, job in jobs(load(workflow.name)).items():
        for step in steps(job):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, name


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_no_expression_is_expanded_inside_a_run_script(workflow: Path) -> None:
    """Template injection: run: scripts read values from env:, never from ${{ }}."""
    for name, job in jobs(load(workflow.name)).items():
        for run in runs(job):
            assert "${{" not in run, f"{workflow.name} {name}: expression in run: {run!r}"


# --------------------------------------------------------------------------------------------
# (d) the scripts the workflows run
# --------------------------------------------------------------------------------------------


def called_scripts() -> set[str]:
    return {
        match
        for workflow in WORKFLOWS
        for job in jobs(load(workflow.name)).values()
        for run in runs(job)
        for match in SCRIPT_CALL.findall(run)
    }


def test_workflows_call_scripts_from_the_project() -> None:
    assert {
        "k8s/deploy/build-image.sh",
        "k8s/deploy/helm-deploy.sh",
        "k8s/deploy/helm-rollback.sh",
        "k8s/deploy/notify-slack.sh",
        "k8s/deploy/terraform.sh",
        ".ci/run",
    } <= called_scripts()


@pytest.mark.parametrize("script", sorted(called_scripts()))
def test_each_called_script_exists_and_is_executable(script: str) -> None:
    path = PROJECT_ROOT / script
    assert path.is_file(), f"{script} is called by a workflow but does not exist"
    assert path.stat().st_mode & stat.S_IXUSR, f"{script} is not executable (chmod +x)"


DEPLOY_SCRIPTS = sorted(DEPLOY_DIR.glob("*.sh"))


@pytest.mark.parametrize("script", DEPLOY_SCRIPTS, ids=lambda path: path.name)
def test_deploy_script_is_strict_clean_bash(script: Path) -> None:
    """bash -n everywhere; shellcheck where it is installed; `set -euo pipefail` in each
    program (lib.sh is sourced by them, not run)."""
    text = script.read_text()
    if script.name == "lib.sh":
        assert not script.stat().st_mode & stat.S_IXUSR, "lib.sh is sourced, never run"
        assert text.startswith("# shellcheck shell=bash")
    else:
        assert text.startswith("#!/usr/bin/env bash\n"), script.name
        assert "\nset -euo pipefail\n" in text, script.name
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        result = subprocess.run(
            [shellcheck, "-x", str(script)], cwd=PROJECT_ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_dagster_chart_version_is_the_projects_dagster_version() -> None:
    pins = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    (dagster,) = [pin for pin in pins["dependencies"] if pin.startswith("dagster==")]
    lib = (DEPLOY_DIR / "lib.sh").read_text()
    assert f"DAGSTER_CHART_VERSION={dagster.removeprefix('dagster==')}\n" in lib


# --------------------------------------------------------------------------------------------
# ci.yml
# --------------------------------------------------------------------------------------------


def test_ci_lints_tests_checks_infrastructure_and_builds_both_images() -> None:
    ci = load("ci.yml")
    assert set(ci["on"]) == {"pull_request", "push"}
    assert ci["on"]["push"] == {"branches": ["main"]}
    commands = {name: "\n".join(runs(job)) for name, job in jobs(ci).items()}
    assert "make lint" in commands["lint"]
    # .ci/run: Debian's chromium, prometheus and alertmanager, then `make test`.
    assert ".ci/run" in commands["test"]
    assert "make test" in (PROJECT_ROOT / ".ci" / "run").read_text()
    assert "k8s/deploy/infra-checks.sh" in commands["infra"]
    image = jobs(ci)["image"]
    assert image["strategy"]["matrix"]["variant"] == ["cpu", "cuda"]
    assert 'k8s/deploy/build-image.sh "$VARIANT" "$GITHUB_SHA"' in commands["image"]
    assert "--push" not in "\n".join(commands.values()), "CI pushes nothing"
    assert "secrets." not in (WORKFLOWS_DIR / "ci.yml").read_text()


# --------------------------------------------------------------------------------------------
# (e) deploy.yml
# --------------------------------------------------------------------------------------------

DEPLOY = load("deploy.yml")


def deploy_job(environment: str) -> dict[str, Any]:
    """The job that deploys to ``environment``: named after it, in its GitHub environment."""
    job = jobs(DEPLOY)[environment]
    assert environment_name(job) == environment
    return job


def test_deploy_runs_on_main_and_by_hand_with_an_environment() -> None:
    triggers = DEPLOY["on"]
    assert triggers["push"] == {"branches": ["main"]}
    assert set(triggers) == {"push", "workflow_dispatch"}
    choice = triggers["workflow_dispatch"]["inputs"]["environment"]
    assert choice["type"] == "choice" and set(choice["options"]) == set(ENVIRONMENTS)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_deploy_validates_then_rolls_back_on_failure_and_always_notifies(
    environment: str,
) -> None:
    job = deploy_job(environment)
    assert job["concurrency"] == {"group": f"deploy-{environment}", "cancel-in-progress": False}
    deploy = step_index(job, rf"k8s/deploy/helm-deploy\.sh {environment} ")
    validate = step_index(job, r"aiplatform validate --endpoint")
    (thresholds,) = VALIDATE.findall(steps(job)[validate]["run"])
    assert thresholds == environment
    assert steps(job)[validate]["env"]["AIPLATFORM_VALIDATE_API_KEY"] == (
        "${{ secrets.AIPLATFORM_VALIDATE_API_KEY }}"
    )
    rollback = step_index(job, rf"k8s/deploy/helm-rollback\.sh {environment}$")
    assert steps(job)[rollback]["if"] == "failure()"
    notify = step_index(job, r"k8s/deploy/notify-slack\.sh")
    assert steps(job)[notify]["if"] == "always()"
    assert steps(job)[notify]["env"] == {
        "SLACK_WEBHOOK_URL": "${{ secrets.SLACK_WEBHOOK_URL }}",
        "STATUS": "${{ job.status }}",
    }
    assert deploy < validate < rollback < notify == len(steps(job)) - 1


def test_production_gets_the_digests_staging_validated_after_staging_passed() -> None:
    staging, production = deploy_job("staging"), deploy_job("production")
    assert "staging" in production["needs"]
    # No `always()` or `failure()` in its condition: a failed staging job stops it.
    assert "always()" not in production["if"] and "failure()" not in production["if"]
    assert "github.ref == 'refs/heads/main'" in production["if"]
    images = {key: staging["env"][key] for key in ("IMAGE_TAG", "CPU_DIGEST", "CUDA_DIGEST")}
    assert all(value.startswith("${{ needs.") for value in images.values())
    assert {key: production["env"][key] for key in images} == images
    promote = step_index(production, r"k8s/deploy/promote-image\.sh ")
    deploy = step_index(production, r"k8s/deploy/helm-deploy\.sh production ")
    assert promote < deploy
    assert "build-image.sh" not in "\n".join(runs(production)), "production never rebuilds"


def test_images_are_built_once_and_tagged_by_commit() -> None:
    (builder,) = [job for job in jobs(DEPLOY).values() if "build-image.sh" in str(runs(job))]
    built = [run for run in runs(builder) if "build-image.sh" in run]
    assert len(built) == 2
    for variant, run in zip(("cpu", "cuda"), built, strict=True):
        assert f'k8s/deploy/build-image.sh --push {variant} "$GITHUB_SHA"' in run


# --------------------------------------------------------------------------------------------
# (f) infra.yml
# --------------------------------------------------------------------------------------------


def test_infra_plans_pull_requests_that_touch_terraform_and_applies_main_behind_approval() -> None:
    infra = load("infra.yml")
    assert "terraform/**" in infra["on"]["pull_request"]["paths"]
    assert infra["on"]["push"]["branches"] == ["main"]
    planned, applied = [], []
    for name, job in jobs(infra).items():
        commands = "\n".join(runs(job))
        if re.search(r"terraform\.sh \S+ apply\b", commands):
            assert job["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
            assert environment_name(job), f"{name} applies without an environment's approval"
            applied.append(environment_name(job))
        if re.search(r"terraform\.sh \S+ plan\b", commands):
            assert job["if"] == "github.event_name == 'pull_request'"
            planned.extend(job["strategy"]["matrix"]["environment"])
    assert sorted(planned) == sorted(ENVIRONMENTS)
    assert applied == ["infra-staging", "infra-production"]
    assert jobs(infra)["apply-production"]["needs"] == "apply-staging"


# --------------------------------------------------------------------------------------------
# (g) secrets
# --------------------------------------------------------------------------------------------


def text_files() -> list[Path]:
    return [*WORKFLOWS, ZIZMOR_CONFIG, *DEPLOY_SCRIPTS]


@pytest.mark.parametrize("path", text_files(), ids=lambda path: path.name)
def test_no_secret_literal(path: Path) -> None:
    text = path.read_text()
    for kind, pattern in SECRET_LITERALS.items():
        match = pattern.search(text)
        assert match is None, f"{path.name}: looks like a {kind}: {match.group(0)[:12]}..."


def env_blocks(workflow: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield "workflow", workflow.get("env") or {}
    for name, job in jobs(workflow).items():
        yield name, job.get("env") or {}
        for step in steps(job):
            yield f"{name}: {step.get('name', step.get('uses', ''))}", step.get("env") or {}
            yield f"{name}: {step.get('uses', '')}", step.get("with") or {}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_secrets_only_through_github_secrets(workflow: Path) -> None:
    """Every secret-like setting is exactly one ``${{ secrets.X }}``; every mention of
    ``secrets.`` is such a reference; Azure is reached with OIDC only (no ``creds:``)."""
    text = "\n".join(
        line for line in workflow.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    assert text.count("secrets.") == len(SECRET_REFERENCE.findall(text))
    assert "secrets: inherit" not in text
    for where, block in env_blocks(load(workflow.name)):
        for key, value in block.items():
            if SECRET_LIKE_NAME.search(key) and key not in NOT_SECRETS:
                assert SECRET_REFERENCE.fullmatch(str(value)), f"{where}: {key} is not a secret"
            if isinstance(value, str) and "secrets." in value:
                assert SECRET_REFERENCE.fullmatch(value), f"{where}: {key}: {value}"
    for name, job in jobs(load(workflow.name)).items():
        for step in steps(job):
            if step.get("uses", "").startswith("azure/login@"):
                assert step["with"] == {
                    "client-id": "${{ secrets.AZURE_CLIENT_ID }}",
                    "tenant-id": "${{ secrets.AZURE_TENANT_ID }}",
                    "subscription-id": "${{ secrets.AZURE_SUBSCRIPTION_ID }}",
                }, name
                assert job["permissions"]["id-token"] == "write", name


# --------------------------------------------------------------------------------------------
# The scripts at work, with recording stand-ins for az, helm, docker and curl
# --------------------------------------------------------------------------------------------

TAG = "0123456789abcdef0123456789abcdef01234567"
CPU_DIGEST = "sha256:" + "c" * 64
CUDA_DIGEST = "sha256:" + "d" * 64
DEPLOY_ENV = {
    "REGISTRY": "acraiplatformstg.azurecr.io",
    "DAGSTER_CLIENT_ID": "dagster-client-id",
    "API_CLIENT_ID": "api-client-id",
    "API_HOST": "api.staging.aiplatform.test",
    "POSTGRES_FQDN": "psql-aiplatform-stg.postgres.database.azure.com",
}

STUB = """\
#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *args]) + "\\n")
state = json.loads(open(os.environ["STUB_STATE"]).read())
{body}
"""


class Stubs:
    """Stand-ins for the programs the scripts drive: each call is logged, and answered from a
    shared JSON state (image digests in the registry, release revisions)."""

    def __init__(self, folder: Path, state: dict[str, Any]) -> None:
        self.bin = folder / "bin"
        self.bin.mkdir(parents=True)
        self.log = folder / "calls.jsonl"
        self.log.touch()
        self.state = folder / "state.json"
        self.state.write_text(json.dumps(state))
        self.env = {
            **{key: os.environ[key] for key in ("HOME", "LANG") if key in os.environ},
            "PATH": f"{self.bin}:/usr/bin:/bin:{Path(sys.executable).parent}",
            "STUB_LOG": str(self.log),
            "STUB_STATE": str(self.state),
            "RUNNER_TEMP": str(folder),
        }

    def add(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(STUB.format(python=sys.executable, body=textwrap.dedent(body)))
        path.chmod(0o755)

    def calls(self, program: str) -> list[list[str]]:
        lines = self.log.read_text().splitlines()
        return [call[1:] for call in map(json.loads, lines) if call[0] == program]

    def run(self, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(DEPLOY_DIR / command[0]), *command[1:]],
            env={**self.env, **env},
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )


AZ = """
if args[:3] == ["acr", "repository", "show"]:
    image = args[args.index("--image") + 1]
    digest = state["digests"].get(image.split(":")[1])
    if digest is None:
        sys.exit("ERROR: manifest unknown")
    print(digest)
elif args[:3] == ["acr", "repository", "update"]:
    pass
elif args[:2] == ["acr", "import"]:
    source = args[args.index("--source") + 1]
    tag = args[args.index("--image") + 1].split(":")[1]
    state["digests"][tag] = source.split("@")[1]
    open(os.environ["STUB_STATE"], "w").write(json.dumps(state))
else:
    sys.exit(f"unexpected az call: {args}")
"""

HELM = """
release = args[2] if args[0] == "upgrade" else args[1]
if args[0] == "history":
    revision = state["revisions"].get(release, 0)
    if not revision:
        sys.exit("Error: release: not found")
    print(json.dumps([{"revision": revision, "status": "deployed"}]))
elif args[0] in ("upgrade", "rollback"):
    state["revisions"][release] = state["revisions"].get(release, 0) + 1
    open(os.environ["STUB_STATE"], "w").write(json.dumps(state))
else:
    sys.exit(f"unexpected helm call: {args}")
"""


def deploy_stubs(tmp_path: Path, digests: dict[str, str], revisions: dict[str, int]) -> Stubs:
    stubs = Stubs(tmp_path, {"digests": digests, "revisions": revisions})
    stubs.add("az", AZ)
    stubs.add("helm", HELM)
    return stubs


def set_values(call: list[str]) -> dict[str, str]:
    """The --set-string KEY=VALUE pairs of a helm call."""
    pairs = [call[i + 1] for i, arg in enumerate(call) if arg == "--set-string"]
    return dict(pair.split("=", 1) for pair in pairs)


def values_files(call: list[str]) -> list[Path]:
    return [Path(call[i + 1]) for i, arg in enumerate(call) if arg == "--values"]


def nested(dotted: Mapping[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = result
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return result


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_helm_deploy_upgrades_both_releases_with_the_environments_values(
    tmp_path: Path, environment: str
) -> None:
    stubs = deploy_stubs(
        tmp_path, {TAG: CPU_DIGEST, f"{TAG}-cuda": CUDA_DIGEST}, {"dagster": 4, "aiplatform-api": 7}
    )
    result = stubs.run("helm-deploy.sh", environment, TAG, CPU_DIGEST, CUDA_DIGEST, **DEPLOY_ENV)
    assert result.returncode == 0, result.stderr
    upgrades = [call for call in stubs.calls("helm") if call[0] == "upgrade"]
    assert [call[:4] for call in upgrades] == [
        ["upgrade", "--install", "dagster", "dagster"],
        [
            "upgrade",
            "--install",
            "aiplatform-api",
            str(PROJECT_ROOT / "k8s/charts/aiplatform-api"),
        ],
    ]
    for call in upgrades:
        assert call[call.index("--namespace") + 1] == "aiplatform"
        assert "--wait" in call and "--atomic" not in call and "--rollback-on-failure" not in call
    dagster, api = upgrades
    assert dagster[dagster.index("--repo") + 1] == "https://dagster-io.github.io/helm"
    assert values_files(dagster) == [
        PROJECT_ROOT / "k8s/dagster/values.yaml",
        PROJECT_ROOT / f"k8s/dagster/values-{environment}.yaml",
    ]
    assert set_values(dagster) == {
        "dagster-user-deployments.deployments[0].image.repository": (
            "acraiplatformstg.azurecr.io/aiplatform-dagster"
        ),
        "dagster-user-deployments.deployments[0].image.tag": f"{TAG}-cuda",
        r"serviceAccount.annotations.azure\.workload\.identity/client-id": "dagster-client-id",
    }
    # The same --set paths as README.md's install of the Dagster chart (which
    # test_dagster_helm_values.py validates against the chart's schema).
    readme = (PROJECT_ROOT / "README.md").read_text()
    for key in set_values(dagster):
        assert f'"{key}=' in readme, key
    # The API chart renders, by Helm's own library, with exactly what the script passes.
    assert values_files(api) == [
        PROJECT_ROOT / f"k8s/charts/aiplatform-api/values-{environment}.yaml"
    ]
    chart = PROJECT_ROOT / "k8s/charts/aiplatform-api"
    layers = [
        yaml.safe_load(path.read_text()) for path in (chart / "values.yaml", *values_files(api))
    ]
    values = merged(*layers, nested(set_values(api)))
    manifests = render_chart(chart, values, "aiplatform-api", "aiplatform")
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"acraiplatformstg.azurecr.io/aiplatform-dagster:{TAG}"
    # The revisions before the upgrade, for helm-rollback.sh.
    recorded = (tmp_path / f"aiplatform-helm-revisions-{environment}").read_text()
    assert recorded == "dagster 4\naiplatform-api 7\n"


def test_helm_deploy_refuses_a_tag_that_is_not_the_validated_digest(tmp_path: Path) -> None:
    stubs = deploy_stubs(tmp_path, {TAG: CPU_DIGEST, f"{TAG}-cuda": CPU_DIGEST}, {})
    result = stubs.run("helm-deploy.sh", "staging", TAG, CPU_DIGEST, CUDA_DIGEST, **DEPLOY_ENV)
    assert result.returncode != 0
    assert f"{TAG}-cuda is at '{CPU_DIGEST}', not {CUDA_DIGEST}" in result.stderr
    assert stubs.calls("helm") == []


def test_helm_deploy_names_what_is_missing(tmp_path: Path) -> None:
    stubs = deploy_stubs(tmp_path, {}, {})
    env = {key: value for key, value in DEPLOY_ENV.items() if key != "API_HOST"}
    result = stubs.run("helm-deploy.sh", "staging", TAG, CPU_DIGEST, CUDA_DIGEST, **env)
    assert result.returncode != 0 and "set API_HOST" in result.stderr
    result = stubs.run("helm-deploy.sh", "qa", TAG, CPU_DIGEST, CUDA_DIGEST, **DEPLOY_ENV)
    assert result.returncode != 0 and "staging or production" in result.stderr


def test_helm_rollback_returns_each_upgraded_release_to_its_recorded_revision(
    tmp_path: Path,
) -> None:
    # Dagster was upgraded (4 -> 5), the API's upgrade never ran (still 7).
    stubs = deploy_stubs(tmp_path, {}, {"dagster": 5, "aiplatform-api": 7})
    (tmp_path / "aiplatform-helm-revisions-staging").write_text("dagster 4\naiplatform-api 7\n")
    result = stubs.run("helm-rollback.sh", "staging")
    assert result.returncode == 0, result.stderr
    rollbacks = [call for call in stubs.calls("helm") if call[0] == "rollback"]
    assert [call[:3] for call in rollbacks] == [["rollback", "dagster", "4"]]
    assert "--wait" in rollbacks[0]


def test_helm_rollback_does_nothing_when_nothing_was_deployed(tmp_path: Path) -> None:
    stubs = deploy_stubs(tmp_path, {}, {"dagster": 5, "aiplatform-api": 7})
    result = stubs.run("helm-rollback.sh", "production")
    assert result.returncode == 0, result.stderr
    assert stubs.calls("helm") == []


def test_deploy_then_rollback_restores_both_releases(tmp_path: Path) -> None:
    stubs = deploy_stubs(
        tmp_path, {TAG: CPU_DIGEST, f"{TAG}-cuda": CUDA_DIGEST}, {"dagster": 2, "aiplatform-api": 9}
    )
    result = stubs.run("helm-deploy.sh", "staging", TAG, CPU_DIGEST, CUDA_DIGEST, **DEPLOY_ENV)
    assert result.returncode == 0, result.stderr
    result = stubs.run("helm-rollback.sh", "staging")
    assert result.returncode == 0, result.stderr
    rollbacks = [call[:3] for call in stubs.calls("helm") if call[0] == "rollback"]
    assert rollbacks == [["rollback", "aiplatform-api", "9"], ["rollback", "dagster", "2"]]


def test_promote_imports_the_validated_digests_and_refuses_others(tmp_path: Path) -> None:
    stubs = deploy_stubs(tmp_path, {}, {})
    source = (
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/stg"
    )
    env = {"REGISTRY": "acraiplatformprd.azurecr.io", "SOURCE_REGISTRY_ID": source}
    result = stubs.run("promote-image.sh", TAG, CPU_DIGEST, CUDA_DIGEST, **env)
    assert result.returncode == 0, result.stderr
    imports = [call for call in stubs.calls("az") if call[:2] == ["acr", "import"]]
    assert [call[call.index("--source") + 1] for call in imports] == [
        f"aiplatform-dagster@{CPU_DIGEST}",
        f"aiplatform-dagster@{CUDA_DIGEST}",
    ]
    locks = [call for call in stubs.calls("az") if call[:3] == ["acr", "repository", "update"]]
    assert len(locks) == 2 and all("--write-enabled" in call for call in locks)
    # Production already holds the tag at another digest: never overwritten.
    stubs = deploy_stubs(tmp_path / "again", {TAG: CUDA_DIGEST}, {})
    result = stubs.run("promote-image.sh", TAG, CPU_DIGEST, CUDA_DIGEST, **env)
    assert result.returncode != 0 and "not the validated" in result.stderr


def test_build_image_builds_each_variant_from_the_dockerfile(tmp_path: Path) -> None:
    stubs = Stubs(tmp_path, {})
    stubs.add("docker", "")
    for variant in ("cpu", "cuda"):
        result = stubs.run("build-image.sh", variant, TAG)
        assert result.returncode == 0, result.stderr
    cpu, cuda = stubs.calls("docker")
    for call, variant, tag in ((cpu, "cpu", TAG), (cuda, "cuda", f"{TAG}-cuda")):
        assert call[:2] == ["buildx", "build"]
        assert call[call.index("--file") + 1] == str(PROJECT_ROOT / "k8s/image/Dockerfile")
        assert call[call.index("--build-arg") + 1] == f"VARIANT={variant}"
        assert call[call.index("--tag") + 1] == f"aiplatform-dagster:{tag}"
        assert "--push" not in call and call[-1] == str(PROJECT_ROOT)
    assert stubs.run("build-image.sh", "rocm", TAG).returncode != 0


def test_build_image_pushes_locks_and_prints_only_the_digest(tmp_path: Path) -> None:
    stubs = Stubs(tmp_path, {"digests": {}})
    stubs.add("az", AZ)
    stubs.add(
        "docker",
        """
        metadata = args[args.index("--metadata-file") + 1]
        open(metadata, "w").write(json.dumps({"containerimage.digest": state["pushed"]}))
        tag = args[args.index("--tag") + 1].split(":")[1]
        state["digests"][tag] = state["pushed"]
        open(os.environ["STUB_STATE"], "w").write(json.dumps(state))
        """,
    )
    stubs.state.write_text(json.dumps({"digests": {}, "pushed": CUDA_DIGEST}))
    env = {"REGISTRY": "acraiplatformstg.azurecr.io"}
    result = stubs.run("build-image.sh", "--push", "cuda", TAG, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{CUDA_DIGEST}\n"
    (push,) = stubs.calls("docker")
    assert (
        push[push.index("--tag") + 1]
        == f"acraiplatformstg.azurecr.io/aiplatform-dagster:{TAG}-cuda"
    )
    assert "--push" in push
    assert any(call[:3] == ["acr", "repository", "update"] for call in stubs.calls("az"))
    # A re-run of the same commit finds the locked tag: nothing is rebuilt.
    result = stubs.run("build-image.sh", "--push", "cuda", TAG, **env)
    assert result.returncode == 0 and result.stdout == f"{CUDA_DIGEST}\n"
    assert len(stubs.calls("docker")) == 1


CURL = """
config = sys.stdin.read()
body = open(args[args.index("--data-binary") + 1].removeprefix("@")).read()
open(os.environ["STUB_STATE"], "w").write(json.dumps({"config": config, "body": body}))
"""


def test_notify_slack_sends_safe_json_without_the_webhook_on_the_command_line(
    tmp_path: Path,
) -> None:
    stubs = Stubs(tmp_path, {})
    stubs.add("curl", CURL)
    webhook = "https://hooks.example.test/services/T000/B000/xyz"
    message = 'staging "quoted" \\ back\nslash $(not run) `nor this`'
    result = stubs.run("notify-slack.sh", "failure", message, SLACK_WEBHOOK_URL=webhook)
    assert result.returncode == 0, result.stderr
    sent = json.loads(stubs.state.read_text())
    assert sent["config"] == f'url = "{webhook}"\n'
    text = json.loads(sent["body"])["text"]
    assert text.startswith(":x: deploy failure: ") and text.endswith(message)
    (call,) = stubs.calls("curl")
    assert webhook not in " ".join(call)
    assert "--fail" in call


def test_notify_slack_without_a_webhook_sends_nothing_and_refuses_odd_statuses(
    tmp_path: Path,
) -> None:
    stubs = Stubs(tmp_path, {})
    stubs.add("curl", CURL)
    result = stubs.run("notify-slack.sh", "success", "staging ok")
    assert result.returncode == 0 and "not sent" in result.stderr
    assert stubs.calls("curl") == []
    assert stubs.run("notify-slack.sh", "maybe", "x").returncode != 0
