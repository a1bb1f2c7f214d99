#!/usr/bin/env bash
# Frees disk on a GitHub-hosted Ubuntu runner before the CUDA image build (its torch CUDA
# wheels and base image need more than the runner's free space): removes preinstalled
# toolchains this project never uses. Refuses to run anywhere else.
#
#   free-disk-space.sh
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 0)) || die "takes no arguments"
[[ ${RUNNER_ENVIRONMENT:-} == github-hosted ]] \
    || die "only for GitHub-hosted runners (RUNNER_ENVIRONMENT=github-hosted)"
df -h / >&2
sudo rm -rf /usr/share/dotnet /usr/local/lib/android /opt/ghc /usr/local/.ghcup \
    /opt/hostedtoolcache/CodeQL /usr/local/share/boost /usr/share/swift
sudo docker image prune --all --force >/dev/null
df -h / >&2
