#!/usr/bin/env bash
# The Debian packages the CI jobs need beyond .ci/run's own, in the job's Debian container
# (python:3.11 slim bookworm, as root), and with --services a running PostgreSQL and Redis:
# the "machine where PostgreSQL and Redis already run" that .ci/run expects.
#
#   ci-packages.sh [--services]
#
# Always: make, git, curl, unzip (hashicorp/setup-terraform unpacks with it) and Debian's
# prometheus and prometheus-alertmanager (promtool, amtool), without recommends.
# --services: postgresql and redis-server, started on their default ports; the tests connect
# as postgres to 127.0.0.1:5432 without a password (trust for loopback TCP only) and to
# redis://127.0.0.1:6379/0.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERVICES=0
case ${1:-} in
"") ;;
--services) SERVICES=1 ;;
*) die "usage: ci-packages.sh [--services]" ;;
esac
((EUID == 0)) || die "run as root, inside the CI job's Debian container"

packages=(make git curl unzip ca-certificates prometheus prometheus-alertmanager)
if ((SERVICES)); then
    packages+=(postgresql redis-server)
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

if ((SERVICES)); then
    version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
    [[ -n $version ]] || die "no PostgreSQL cluster was created by the postgresql package"
    hba=/etc/postgresql/$version/main/pg_hba.conf
    # Loopback TCP without a password, ahead of the package's own rules; nothing else listens.
    {
        echo "host all all 127.0.0.1/32 trust"
        echo "host all all ::1/128 trust"
        cat "$hba"
    } >"$hba.new"
    mv "$hba.new" "$hba"
    chown postgres:postgres "$hba"
    pg_ctlcluster "$version" main restart || pg_ctlcluster "$version" main start
    redis-server --daemonize yes --port 6379 --save '' --appendonly no
    for _ in $(seq 30); do
        if pg_isready --host 127.0.0.1 --port 5432 --quiet && redis-cli ping >/dev/null 2>&1; then
            note "PostgreSQL $version and Redis are up"
            exit 0
        fi
        sleep 1
    done
    die "PostgreSQL or Redis did not start"
fi
