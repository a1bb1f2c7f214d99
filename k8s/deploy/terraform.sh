#!/usr/bin/env bash
# Plans or applies terraform/ for one environment, as infra.yml runs it.
#
#   terraform.sh ENV plan|apply
#
#   plan   terraform plan without taking the state lock (pull requests), its text in the job
#          summary when GitHub's GITHUB_STEP_SUMMARY is set; exits 0 with or without changes.
#   apply  plan to a file, then apply exactly that file, holding the state lock.
#
# Environment, all from GitHub secrets or environment variables:
#   ARM_CLIENT_ID, ARM_TENANT_ID, ARM_SUBSCRIPTION_ID  the environment's federated identity;
#       with ARM_USE_OIDC=true the azurerm provider and backend ask GitHub for a fresh OIDC
#       token whenever they need one (long applies outlive a single Azure CLI token)
#   TF_STATE_RESOURCE_GROUP, TF_STATE_STORAGE_ACCOUNT, TF_STATE_CONTAINER  the remote state;
#       the key is ENV.tfstate (terraform/versions.tf), read with Entra ID, no account key
#   TF_VAR_aks_admin_group_object_ids  a JSON list of Entra group object ids
#   TF_VAR_postgres_administrator_password  write-only and ephemeral: never in plan or state
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 2)) || die "usage: terraform.sh ENV plan|apply"
ENV=$1
ACTION=$2
check_environment "$ENV"
[[ $ACTION == plan || $ACTION == apply ]] || die "ACTION must be plan or apply, not '$ACTION'"
require_env ARM_CLIENT_ID ARM_TENANT_ID ARM_SUBSCRIPTION_ID ARM_USE_OIDC \
    TF_STATE_RESOURCE_GROUP TF_STATE_STORAGE_ACCOUNT TF_STATE_CONTAINER \
    TF_VAR_aks_admin_group_object_ids TF_VAR_postgres_administrator_password
export TF_IN_AUTOMATION=1 TF_INPUT=0

cd "$REPO_ROOT/terraform"
terraform init -input=false -no-color \
    -backend-config="resource_group_name=$TF_STATE_RESOURCE_GROUP" \
    -backend-config="storage_account_name=$TF_STATE_STORAGE_ACCOUNT" \
    -backend-config="container_name=$TF_STATE_CONTAINER" \
    -backend-config="key=$ENV.tfstate" \
    -backend-config="use_azuread_auth=true" \
    -backend-config="use_oidc=true"

plan_file="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/aiplatform-$ENV.tfplan"
lock=(-lock-timeout=10m)
if [[ $ACTION == plan ]]; then
    lock=(-lock=false)
fi
status=0
terraform plan -input=false -no-color "${lock[@]}" -detailed-exitcode \
    -var-file="environments/$ENV.tfvars" -out="$plan_file" || status=$?
case $status in
0) note "$ENV: no changes" ;;
2) note "$ENV: changes planned" ;;
*) die "terraform plan failed for $ENV (exit $status)" ;;
esac

if [[ -n ${GITHUB_STEP_SUMMARY:-} ]]; then
    {
        echo "### terraform $ACTION: $ENV"
        echo '<details><summary>plan</summary>'
        echo
        echo '```'
        terraform show -no-color "$plan_file"
        echo '```'
        echo '</details>'
    } >>"$GITHUB_STEP_SUMMARY"
fi

if [[ $ACTION == apply && $status == 2 ]]; then
    terraform apply -input=false -no-color "${lock[@]}" "$plan_file"
fi
rm -f "$plan_file"
