#!/usr/bin/env bash
# POST to a deployed job function the way Cloud Scheduler does: the HTTPS
# alternative to the in-process Render start command (README, "Deploy").
#
#   bash scripts/call-function.sh URL [JSON_BODY]
#
# URL may lack its scheme (https:// is then added, once). CRON_SECRET comes from
# the environment and reaches curl through a file descriptor, never the command
# line. CALL_MAX_TIME_S caps the whole call (default 600: a 540 s function
# timeout plus a margin). The exit status is non-zero on any non-2xx answer,
# a timeout or a connection failure, so a cron runner sees every failure.
set -euo pipefail

url="${1:?usage: call-function.sh URL [JSON_BODY]}"
body="${2:-"{}"}"
: "${CRON_SECRET:?CRON_SECRET must be set}"

case "$url" in
  *://*) ;;
  *) url="https://${url}" ;;
esac

exec curl --fail-with-body --silent --show-error \
  --max-time "${CALL_MAX_TIME_S:-600}" \
  --request POST \
  --header "Content-Type: application/json" \
  --header @<(printf 'Authorization: Bearer %s\n' "$CRON_SECRET") \
  --data "$body" \
  --write-out '\n' \
  "$url"
