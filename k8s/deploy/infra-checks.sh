#!/usr/bin/env bash
# The offline infrastructure checks, run by CI's infra job from the repository root after
# `make install` and the checkov virtualenv (make .venv-checkov/bin/checkov):
#
#   infra-checks.sh
#
#   1. terraform fmt -check over terraform/, then init without a backend and validate, in a
#      copy of terraform/ (no .terraform or lock file is left in the tree);
#   2. pytest over aiplatform_dagster_tests/infra/ (checkov, kubernetes-validate in strict mode,
#      Helm's renderer, the Dagster chart's schemas, hadolint, terraform's loader, these
#      workflows: check-jsonschema and zizmor) and the monitoring tests (promtool check and
#      test rules, amtool).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 0)) || die "takes no arguments"
cd "$REPO_ROOT"
command -v terraform >/dev/null || die "no terraform on PATH (hashicorp/setup-terraform)"
[[ -x .venv/bin/pytest ]] || die "no .venv: run make install first"
[[ -x .venv-checkov/bin/checkov ]] || die "no checkov: run make .venv-checkov/bin/checkov first"
command -v promtool >/dev/null || die "no promtool: apt-get install prometheus"

terraform fmt -check -recursive -diff terraform

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
cp -R terraform "$workdir/terraform"
terraform -chdir="$workdir/terraform" init -backend=false -input=false -no-color
terraform -chdir="$workdir/terraform" validate -no-color

.venv/bin/pytest -p no:cacheprovider -q --durations=5 \
    aiplatform_dagster_tests/infra aiplatform_dagster_tests/serving/test_monitoring_config.py
