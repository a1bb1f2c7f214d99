#!/usr/bin/env bash
# Promotes the images validated in staging to production's registry, by digest: the bytes that
# passed staging's validation are the ones production runs, never a rebuild.
#
#   promote-image.sh TAG CPU_DIGEST CUDA_DIGEST
#
# Imports aiplatform-dagster@CPU_DIGEST as aiplatform-dagster:TAG and @CUDA_DIGEST as TAG-cuda
# from the staging registry into $REGISTRY (production's registry_login_server) with
# `az acr import`, which copies registry to registry inside Azure and keeps the digest; then
# checks the digests and locks the tags. A tag already there at the same digest (a re-run) is
# kept; at another digest, the promotion fails.
#
# Environment: REGISTRY (production's registry_login_server) and SOURCE_REGISTRY_ID (the staging
# registry's Azure resource id). The production deploy identity needs to read the staging
# registry (AcrPull on it) and import into its own (Container Registry Data Importer and Data
# Reader, or Contributor on the registry).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 3)) || die "usage: promote-image.sh TAG CPU_DIGEST CUDA_DIGEST"
TAG=$1
check_tag "$TAG"
check_digest "$2"
check_digest "$3"
require_env REGISTRY SOURCE_REGISTRY_ID
[[ $SOURCE_REGISTRY_ID == /subscriptions/*/providers/Microsoft.ContainerRegistry/registries/* ]] \
    || die "SOURCE_REGISTRY_ID must be a registry's resource id, not '$SOURCE_REGISTRY_ID'"

for pair in "$TAG=$2" "$TAG-cuda=$3"; do
    tag=${pair%%=*}
    digest=${pair#*=}
    found=$(image_digest "$tag")
    if [[ -z $found ]]; then
        az acr import --name "$(registry_name)" --registry "$SOURCE_REGISTRY_ID" \
            --source "$IMAGE_REPOSITORY@$digest" --image "$IMAGE_REPOSITORY:$tag" --only-show-errors
        found=$(image_digest "$tag")
    fi
    [[ $found == "$digest" ]] \
        || die "$REGISTRY/$IMAGE_REPOSITORY:$tag is at '${found:-nothing}', not the validated $digest"
    lock_image "$tag"
    note "$REGISTRY/$IMAGE_REPOSITORY:$tag is the validated $digest (locked)"
done
