#!/usr/bin/env bash
# Rolls an environment's two releases (the API first, then Dagster: the reverse of
# helm-deploy.sh) back to the revisions helm-deploy.sh recorded in this job before it upgraded
# them, i.e. to the revision each had before this deployment.
#
#   helm-rollback.sh ENV
#
# A release still at its recorded revision (its upgrade never started) is left alone; so is one
# that was not installed before (there is nothing to return to: it is reported, not removed).
# With no record (helm-deploy.sh never ran in this job) nothing is rolled back. Exits non-zero if
# a rollback fails. Set HELM_REVISIONS_FILE to use a record made elsewhere.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 1)) || die "usage: helm-rollback.sh ENV"
ENV=$1
check_environment "$ENV"

state=$(revisions_file "$ENV")
if [[ ! -s $state ]]; then
    note "no revisions recorded in $state: helm-deploy.sh did not run, nothing to roll back"
    exit 0
fi

declare -A recorded=()
while read -r release revision; do
    [[ $release == "$DAGSTER_RELEASE" || $release == "$API_RELEASE" ]] \
        || die "unexpected release '$release' in $state"
    [[ $revision =~ ^[0-9]+$ ]] || die "unexpected revision '$revision' for $release in $state"
    recorded[$release]=$revision
done <"$state"

failed=()
for release in "$API_RELEASE" "$DAGSTER_RELEASE"; do
    before=${recorded[$release]:-}
    if [[ -z $before ]]; then
        note "$release: no revision recorded; left alone"
        continue
    fi
    if ! now=$(release_revision "$release"); then
        failed+=("$release")
        continue
    fi
    if [[ $now == "$before" ]]; then
        note "$release: still at revision $before; nothing to roll back"
    elif [[ $before == 0 ]]; then
        note "$release: was not installed before this deployment (now revision $now);" \
            "left in place for inspection: helm uninstall $release -n $NAMESPACE removes it"
        failed+=("$release")
    elif helm rollback "$release" "$before" --namespace "$NAMESPACE" --wait --timeout 15m; then
        note "$release: rolled back from revision $now to $before (as revision $((now + 1)))"
    else
        note "$release: rollback to revision $before failed"
        failed+=("$release")
    fi
done

((${#failed[@]} == 0)) || die "not rolled back: ${failed[*]}"
note "$ENV is back at the revisions it had before this deployment"
