#!/usr/bin/env bash
# The test command: installs and starts what the tests need on a fresh machine (RabbitMQ on
# 127.0.0.1:5672; tmux for the console's end-to-end test; bubblewrap for the sandbox tests; git),
# then runs `cargo test` with any arguments given (e.g. `scripts/test.sh --test worker`).
set -euo pipefail
cd "$(dirname "$0")/.."

rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if ! rabbit_up; then
  echo "RabbitMQ is not answering on 127.0.0.1:5672; starting it"
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
  fi
  rabbitmq-server -detached
  for _ in $(seq 1 120); do
    rabbit_up && break
    sleep 1
  done
  rabbitmqctl await_startup --timeout 120
fi
rabbit_up || { echo "RabbitMQ did not come up on 127.0.0.1:5672" >&2; exit 1; }

# The console's end-to-end test drives the binary in a real terminal through tmux; the sandbox
# tests run handlers under bubblewrap (bwrap); handlers and tests use git.
missing=()
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v git >/dev/null 2>&1 || missing+=(git)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo test "$@"
