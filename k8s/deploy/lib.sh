# shellcheck shell=bash
# Shared by the scripts in k8s/deploy/ (sourced, never run): names, paths and small helpers.
# The scripts are what .github/workflows/ runs; each also runs by hand from a shell signed in
# with `az login`, from a machine inside the platform's virtual network (the registry, the
# cluster's API server in production and the PostgreSQL server are private).

# shellcheck disable=SC2034  # constants read by the scripts that source this file
NAMESPACE=aiplatform
# shellcheck disable=SC2034
IMAGE_REPOSITORY=aiplatform-dagster
# The official Dagster chart, at the version equal to the project's pin (pyproject.toml:
# dagster==1.13.27); release `dagster`, as in README.md and k8s/dagster/values.yaml.
# shellcheck disable=SC2034
DAGSTER_RELEASE=dagster
# shellcheck disable=SC2034
DAGSTER_CHART_REPO=https://dagster-io.github.io/helm
# shellcheck disable=SC2034
DAGSTER_CHART_VERSION=1.13.27
# shellcheck disable=SC2034
API_RELEASE=aiplatform-api

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# One kubeconfig per job, in the runner's per-job temporary folder: no cluster credential is
# left in the runner's home for a later job.
export KUBECONFIG="${KUBECONFIG:-${RUNNER_TEMP:-${TMPDIR:-/tmp}}/aiplatform-kubeconfig}"

die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

note() {
    echo "$(basename "$0"): $*" >&2
}

# require_env NAME...: fail, naming them, when any of these variables is unset or empty.
require_env() {
    local name missing=()
    for name in "$@"; do
        [[ -n ${!name:-} ]] || missing+=("$name")
    done
    ((${#missing[@]} == 0)) || die "set ${missing[*]} (GitHub environment variables or secrets)"
}

check_environment() {
    [[ $1 == staging || $1 == production ]] || die "ENV must be staging or production, not '$1'"
}

check_tag() {
    [[ $1 =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "'$1' is not a valid image tag"
}

check_digest() {
    [[ $1 =~ ^sha256:[0-9a-f]{64}$ ]] || die "'$1' is not an image digest (sha256:<64 hex>)"
}

# The registry's name from its login server (REGISTRY, terraform output registry_login_server).
registry_name() {
    require_env REGISTRY
    echo "${REGISTRY%%.*}"
}

# image_digest TAG: the digest the registry holds for aiplatform-dagster:TAG, empty if none.
image_digest() {
    az acr repository show --name "$(registry_name)" --image "$IMAGE_REPOSITORY:$1" \
        --query digest --output tsv 2>/dev/null || true
}

# lock_image TAG: make aiplatform-dagster:TAG immutable (no push over it, no delete), so that a
# tag deployed once always names the digest that was validated.
lock_image() {
    az acr repository update --name "$(registry_name)" --image "$IMAGE_REPOSITORY:$1" \
        --write-enabled false --delete-enabled false --output none
}

# The file where helm-deploy.sh records each release's revision before it upgrades, and from
# which helm-rollback.sh returns to it.
revisions_file() {
    echo "${HELM_REVISIONS_FILE:-${RUNNER_TEMP:-${TMPDIR:-/tmp}}/aiplatform-helm-revisions-$1}"
}

# release_revision RELEASE: its deployed revision number, 0 when it is not installed.
release_revision() {
    local history errors
    errors=$(mktemp)
    if ! history=$(helm history "$1" --namespace "$NAMESPACE" --max 1 --output json 2>"$errors"); then
        if grep -qi "not found" "$errors"; then
            rm -f "$errors"
            echo 0
            return
        fi
        cat "$errors" >&2
        rm -f "$errors"
        die "cannot read the history of release $1"
    fi
    rm -f "$errors"
    python3 -c 'import json, sys; rows = json.load(sys.stdin); print(rows[-1]["revision"] if rows else 0)' \
        <<<"$history"
}
