#!/usr/bin/env bash
# Signs this job in to the environment's AKS cluster, after azure/login (OIDC):
#
#   aks-credentials.sh
#
# Environment: AKS_RESOURCE_GROUP and AKS_CLUSTER_NAME (terraform outputs resource_group_name and
# aks_cluster_name).
#
# The cluster has Entra ID sign-in and no local accounts, so the kubeconfig uses kubelogin with
# the Azure CLI's token (installed here when missing). The kubeconfig is written to the job's
# temporary folder (lib.sh), never to the runner's home.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 0)) || die "takes no arguments; see the header of ${BASH_SOURCE[0]}"
require_env AKS_RESOURCE_GROUP AKS_CLUSTER_NAME

if ! command -v kubelogin >/dev/null 2>&1 || ! command -v kubectl >/dev/null 2>&1; then
    bin="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/aiplatform-bin"
    mkdir -p "$bin"
    az aks install-cli --install-location "$bin/kubectl" \
        --kubelogin-install-location "$bin/kubelogin" --only-show-errors >&2
    export PATH="$bin:$PATH"
    # Later steps of the job (helm runs kubelogin as the kubeconfig's exec plugin).
    if [[ -n ${GITHUB_PATH:-} ]]; then
        echo "$bin" >>"$GITHUB_PATH"
    fi
fi

az aks get-credentials --resource-group "$AKS_RESOURCE_GROUP" --name "$AKS_CLUSTER_NAME" \
    --file "$KUBECONFIG" --overwrite-existing --only-show-errors
chmod 600 "$KUBECONFIG"
kubelogin convert-kubeconfig --login azurecli --kubeconfig "$KUBECONFIG"
kubectl get namespace "$NAMESPACE" --output name >/dev/null \
    || die "cannot read namespace $NAMESPACE in $AKS_CLUSTER_NAME"
note "signed in to $AKS_CLUSTER_NAME (namespace $NAMESPACE)"
