#!/usr/bin/env bash
# Signs Docker in to the environment's registry with the Azure CLI's identity (after
# azure/login, OIDC): no registry password or admin user exists.
#
#   registry-login.sh
#
# Environment: REGISTRY (terraform output registry_login_server, e.g. acraiplatformstg.azurecr.io).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 0)) || die "takes no arguments; see the header of ${BASH_SOURCE[0]}"
require_env REGISTRY
[[ $REGISTRY =~ ^[a-z0-9]+\.azurecr\.[a-z.]+$ ]] \
    || die "REGISTRY must be an Azure Container Registry login server, not '$REGISTRY'"
az acr login --name "$(registry_name)" --only-show-errors
note "docker is signed in to $REGISTRY"
