#!/bin/sh
# The resilience demo: posts at three replicas under a steady stream of requests through the
# gateway, while one posts instance is killed, users (a single instance) is restarted and posts
# is scaled back to one. Not one request fails. Run it where msctl.toml is (the repository's
# root, for the sample system); MSCTL names the msctl to use.
set -eu
MSCTL=${MSCTL:-msctl}
work=$(mktemp -d)
trap 'touch "$work/stop"; wait 2>/dev/null; rm -rf "$work"' EXIT

$MSCTL up -d --scale posts=3

# The load: one request after another, each through the gateway, counted; a failure is any
# answer that is not 2xx, or a partial one.
(
  while [ ! -e "$work/stop" ]; do
    if body=$($MSCTL call users/1/posts 2>/dev/null) && ! printf '%s' "$body" | grep -q '"partial"'; then
      echo ok >>"$work/answers"
    else
      echo failed >>"$work/answers"
    fi
  done
) &

sleep 1
echo "== kill posts-2"
$MSCTL kill posts-2
sleep 1
echo "== restart users (one instance: a short surge to two)"
$MSCTL restart users
echo "== scale posts to 1"
$MSCTL scale posts=1
$MSCTL ps
sleep 1
touch "$work/stop"
wait

total=$(wc -l <"$work/answers")
failed=$(grep -c failed "$work/answers" || true)
echo "== $total requests, $failed failed"
$MSCTL down
[ "$failed" -eq 0 ] && [ "$total" -gt 0 ]
