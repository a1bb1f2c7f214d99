#!/usr/bin/env bash
# Builds the project image from k8s/image/Dockerfile for one variant (its VARIANT build arg),
# with BuildKit (docker buildx), from the repository root.
#
#   build-image.sh [--push] VARIANT TAG
#
#   VARIANT  cpu or cuda. The cuda image is tagged TAG-cuda (README: "<tag>-cuda"), the cpu
#            image TAG.
#   TAG      an immutable tag: the deploy workflow passes the commit id ($GITHUB_SHA).
#   --push   push to $REGISTRY/aiplatform-dagster (REGISTRY: terraform output
#            registry_login_server), lock the tag in the registry (no overwrite, no delete) and
#            print the pushed digest, sha256:..., alone on stdout. When the tag is already in the
#            registry (a re-run of the same commit) nothing is built: its digest is printed.
#            Needs `az` signed in and `az acr login --name <registry>` done.
#   without --push: build only (CI), which runs the build-time checks of install.sh.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    sed -n '/^#   build-image.sh/,/^#   without/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

PUSH=0
if [[ ${1:-} == --push ]]; then
    PUSH=1
    shift
fi
(($# == 2)) || usage
VARIANT=$1
TAG=$2
[[ $VARIANT == cpu || $VARIANT == cuda ]] || die "VARIANT must be cpu or cuda, not '$VARIANT'"
check_tag "$TAG"
if [[ $VARIANT == cuda ]]; then
    TAG="$TAG-cuda"
fi

build=(
    docker buildx build
    --file "$REPO_ROOT/k8s/image/Dockerfile"
    --build-arg "VARIANT=$VARIANT"
    --platform linux/amd64
    --label "org.opencontainers.image.revision=${GITHUB_SHA:-unknown}"
    --progress plain
)

if ((PUSH == 0)); then
    "${build[@]}" --tag "$IMAGE_REPOSITORY:$TAG" "$REPO_ROOT" >&2
    note "built $IMAGE_REPOSITORY:$TAG ($VARIANT); not pushed"
    exit 0
fi

require_env REGISTRY
existing=$(image_digest "$TAG")
if [[ -n $existing ]]; then
    check_digest "$existing"
    note "$REGISTRY/$IMAGE_REPOSITORY:$TAG is already in the registry: not rebuilt"
    echo "$existing"
    exit 0
fi

metadata=$(mktemp)
trap 'rm -f "$metadata"' EXIT
"${build[@]}" --tag "$REGISTRY/$IMAGE_REPOSITORY:$TAG" --push --metadata-file "$metadata" \
    "$REPO_ROOT" >&2
digest=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["containerimage.digest"])' \
    "$metadata")
check_digest "$digest"
[[ $(image_digest "$TAG") == "$digest" ]] || die "the registry does not hold $TAG at $digest"
lock_image "$TAG"
note "pushed $REGISTRY/$IMAGE_REPOSITORY:$TAG@$digest and locked the tag"
echo "$digest"
