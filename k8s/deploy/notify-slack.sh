#!/usr/bin/env bash
# Posts a deployment's outcome to Slack through an incoming webhook.
#
#   notify-slack.sh STATUS MESSAGE
#
#   STATUS   the job's status: success, failure or cancelled (GitHub's job.status)
#   MESSAGE  one line, e.g. "staging: <commit> deployed and validated"
#
# SLACK_WEBHOOK_URL comes from a GitHub secret; without it (a fork, a local run) the message is
# printed and nothing is sent. The JSON body is built by python3's json module, never by string
# pasting, and the webhook URL reaches curl on stdin, not on its command line. The workflow
# run's link is added when GitHub's variables are set.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 2)) || die "usage: notify-slack.sh STATUS MESSAGE"
STATUS=$1
MESSAGE=$2
case $STATUS in
success) icon=":white_check_mark:" ;;
failure) icon=":x:" ;;
cancelled) icon=":heavy_minus_sign:" ;;
*) die "STATUS must be success, failure or cancelled, not '$STATUS'" ;;
esac

text="$icon ${GITHUB_WORKFLOW:-deploy} $STATUS: $MESSAGE"
if [[ -n ${GITHUB_SERVER_URL:-} && -n ${GITHUB_REPOSITORY:-} && -n ${GITHUB_RUN_ID:-} ]]; then
    text+=" (<$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID|run $GITHUB_RUN_ID>)"
fi

body=$(python3 -c 'import json, sys; print(json.dumps({"text": sys.argv[1]}))' "$text")
if [[ -z ${SLACK_WEBHOOK_URL:-} ]]; then
    note "SLACK_WEBHOOK_URL is not set: not sent: $body"
    exit 0
fi
[[ $SLACK_WEBHOOK_URL == https://* ]] || die "SLACK_WEBHOOK_URL must be an https:// URL"

payload=$(mktemp)
trap 'rm -f "$payload"' EXIT
printf '%s' "$body" >"$payload"
# curl reads its URL from the config on stdin: the webhook is no argument other processes see.
printf 'url = "%s"\n' "$SLACK_WEBHOOK_URL" | curl --config - --fail --silent --show-error \
    --retry 3 --max-time 30 --header 'Content-Type: application/json' \
    --data-binary "@$payload" --output /dev/null
note "sent to Slack: $text"
