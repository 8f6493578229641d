#!/usr/bin/env bash
# Checks the unit files with `systemd-analyze verify` (syntax, directives, specifiers). The
# units name /usr/local/bin/agentctl, which verify wants to exist: the copies checked here
# point at a stand-in executable instead. Skips (exit 0, with a message) without systemd-analyze.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd units not checked: systemd-analyze is not installed" >&2
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '#!/bin/sh\nexit 0\n' >"$tmp/agentctl" && chmod +x "$tmp/agentctl"
for unit in agentctl.service agentctl@.service; do
  sed "s#/usr/local/bin/agentctl#$tmp/agentctl#g" "$here/$unit" >"$tmp/$unit"
done
# A template is checked through an instance of it. verify prints problems and, for some of
# them, still exits 0: any output counts as a failure.
out=$(cd "$tmp" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no \
  "$tmp/agentctl.service" "$tmp/agentctl@webhook.service" "$tmp/agentctl@consumer.service" 2>&1) || {
  echo "$out" >&2
  exit 1
}
if [ -n "$out" ]; then
  echo "$out" >&2
  exit 1
fi
echo "deploy/systemd units are valid ($(systemd-analyze --version | head -1))"
