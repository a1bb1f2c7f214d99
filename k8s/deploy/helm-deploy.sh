#!/usr/bin/env bash
# Deploys one commit's images to an environment, in namespace aiplatform: the Dagster release
# (the official chart with k8s/dagster/values.yaml and values-ENV.yaml; its user-code deployment
# runs the CUDA image) and the serving API (k8s/charts/aiplatform-api with values-ENV.yaml; the
# CPU image), as README.md's "Production deployment" installs them.
#
#   helm-deploy.sh ENV TAG CPU_DIGEST CUDA_DIGEST
#
#   ENV          staging or production
#   TAG          the images' tag (the commit id): TAG for cpu, TAG-cuda for cuda
#   CPU_DIGEST   the digest build-image.sh printed for TAG; CUDA_DIGEST the one for TAG-cuda.
#                The charts take tags; the registry must hold each tag at exactly this digest
#                (tags are locked when pushed), or nothing is deployed.
#
# Environment (identifiers from terraform outputs, GitHub environment variables in the
# workflows): REGISTRY (registry_login_server), DAGSTER_CLIENT_ID
# (dagster_workload_identity_client_id), API_CLIENT_ID (api_workload_identity_client_id),
# API_HOST (the API's ingress host), POSTGRES_FQDN (postgres_fqdn).
#
# Plain `helm upgrade --install --wait`, not --atomic: a failed upgrade stays failed, and the
# rollback is the explicit helm-rollback.sh, to the revisions recorded here before upgrading.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    sed -n '/^#   helm-deploy.sh/,/^#                (tags are locked/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

(($# == 4)) || usage
ENV=$1
TAG=$2
CPU_DIGEST=$3
CUDA_DIGEST=$4
check_environment "$ENV"
check_tag "$TAG"
check_digest "$CPU_DIGEST"
check_digest "$CUDA_DIGEST"
require_env REGISTRY DAGSTER_CLIENT_ID API_CLIENT_ID API_HOST POSTGRES_FQDN

for pair in "$TAG=$CPU_DIGEST" "$TAG-cuda=$CUDA_DIGEST"; do
    found=$(image_digest "${pair%%=*}")
    [[ $found == "${pair#*=}" ]] \
        || die "$REGISTRY/$IMAGE_REPOSITORY:${pair%%=*} is at '${found:-nothing}', not ${pair#*=}"
done

# Before anything changes: each release's revision, for helm-rollback.sh.
state=$(revisions_file "$ENV")
dagster_revision=$(release_revision "$DAGSTER_RELEASE")
api_revision=$(release_revision "$API_RELEASE")
printf '%s %s\n' "$DAGSTER_RELEASE" "$dagster_revision" "$API_RELEASE" "$api_revision" >"$state"
note "recorded revisions before the upgrade in $state: $(tr '\n' ' ' <"$state")"

helm upgrade --install "$DAGSTER_RELEASE" dagster \
    --repo "$DAGSTER_CHART_REPO" --version "$DAGSTER_CHART_VERSION" \
    --namespace "$NAMESPACE" \
    --values "$REPO_ROOT/k8s/dagster/values.yaml" \
    --values "$REPO_ROOT/k8s/dagster/values-$ENV.yaml" \
    --set-string "dagster-user-deployments.deployments[0].image.repository=$REGISTRY/$IMAGE_REPOSITORY" \
    --set-string "dagster-user-deployments.deployments[0].image.tag=$TAG-cuda" \
    --set-string "serviceAccount.annotations.azure\.workload\.identity/client-id=$DAGSTER_CLIENT_ID" \
    --wait --timeout 20m

helm upgrade --install "$API_RELEASE" "$REPO_ROOT/k8s/charts/aiplatform-api" \
    --namespace "$NAMESPACE" \
    --values "$REPO_ROOT/k8s/charts/aiplatform-api/values-$ENV.yaml" \
    --set-string "image.registry=$REGISTRY" \
    --set-string "image.tag=$TAG" \
    --set-string "serviceAccount.clientId=$API_CLIENT_ID" \
    --set-string "ingress.host=$API_HOST" \
    --set-string "postgresql.host=$POSTGRES_FQDN" \
    --wait --timeout 15m

note "deployed $TAG to $ENV: $DAGSTER_RELEASE runs $TAG-cuda ($CUDA_DIGEST), $API_RELEASE runs $TAG ($CPU_DIGEST)"
