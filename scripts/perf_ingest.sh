#!/bin/bash
# Native profile of agentctl's ingest path (README "Second sitting"): the release binary with a
# SQLite journal and RabbitMQ on 127.0.0.1:5672, 2 000 deliveries to warm up, then perf samples
# the process while `agentctl send` posts COUNT realistic deliveries over 64 connections.
# Writes target/profile/perf.data; read it with
#   perf report -i target/profile/perf.data --children --sort sym --stdio -g none
#   scripts/perf_ingest.sh [COUNT]
set -euo pipefail
COUNT=${1:-20000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/agentctl
PAYLOAD=$ROOT/../shared/bench/issues_labeled.json
OUT=$ROOT/target/profile
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
mkdir -p "$OUT"
DATA=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
QUEUE=perf_$$
export AGENTCTL_GITHUB_WEBHOOK_SECRET=profile-secret
AGENTCTL_STORAGE_DATA_DIR=$DATA AGENTCTL_LISTEN_ADDR=127.0.0.1:$PORT \
  AGENTCTL_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/%2f AGENTCTL_BROKER_QUEUE=$QUEUE \
  AGENTCTL_LOG=warn "$BIN" --no-tui --mode webhook >/dev/null 2>"$DATA/log" &
PID=$!
cleanup() {
  kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null || true
  for q in $QUEUE $QUEUE.retry.5s $QUEUE.retry.30s $QUEUE.retry.120s $QUEUE.dead; do
    rabbitmqctl delete_queue "$q" </dev/null >/dev/null 2>&1 || true
  done
  rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -sf "127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.2; done
SEND=("$BIN" send github:issues.labeled --url "http://127.0.0.1:$PORT" --concurrency 64)
"${SEND[@]}" --count 2000 >/dev/null
perf record -F 2000 -g --call-graph dwarf,16384 -p $PID -o "$OUT/perf.data" >/dev/null 2>&1 &
PERF=$!
sleep 0.3
"${SEND[@]}" --count "$COUNT" --file "$PAYLOAD" --event issues | head -3
kill -INT $PERF; wait $PERF || true
echo "profile: $OUT/perf.data"
