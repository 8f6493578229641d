#!/bin/bash
# Profiles of agentctl's ingest path: the release binary, SQLite journal, RabbitMQ on
# 127.0.0.1:5672, deliveries from `agentctl send` after a warm-up. Two kinds:
#   scripts/profile_ingest.sh [COUNT] [extra agentctl send flags...]
#     instruction counts under callgrind (README "Where the time goes"): 200 deliveries to warm
#     up, then COUNT (default 2 000) over 16 connections with instrumentation on. Writes
#     target/profile/callgrind.out.*; read with `callgrind_annotate --inclusive=yes FILE`.
#   scripts/profile_ingest.sh --perf [COUNT] [extra agentctl send flags...]
#     native samples under `perf record -g` (README "Second sitting"): 2 000 deliveries to warm
#     up, then COUNT (default 20 000) of the realistic delivery over 64 connections. Writes
#     target/profile/perf.data; read with
#     `perf report -i target/profile/perf.data --children --sort sym --stdio -g none`.
set -euo pipefail
MODE=callgrind
if [ "${1:-}" = "--perf" ]; then MODE=perf; shift; fi
if [ $MODE = perf ]; then COUNT=${1:-20000}; else COUNT=${1:-2000}; fi
shift || true
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/agentctl
OUT=$ROOT/target/profile
TOOL=$([ $MODE = perf ] && echo perf || echo valgrind)
command -v $TOOL >/dev/null || { echo "needs $TOOL (apt-get install ${TOOL/perf/linux-perf})" >&2; exit 1; }
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
mkdir -p "$OUT"
DATA=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
QUEUE=profile_$$
export AGENTCTL_GITHUB_WEBHOOK_SECRET=profile-secret
WRAP=()
if [ $MODE = callgrind ]; then
  WRAP=(valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$OUT/callgrind.out.%p")
fi
AGENTCTL_STORAGE_DATA_DIR=$DATA AGENTCTL_LISTEN_ADDR=127.0.0.1:$PORT \
  AGENTCTL_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/%2f AGENTCTL_BROKER_QUEUE=$QUEUE \
  AGENTCTL_LOG=$([ $MODE = perf ] && echo warn || echo info) \
  "${WRAP[@]}" "$BIN" --no-tui --mode webhook >/dev/null 2>"$DATA/log" &
PID=$!
cleanup() {
  kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null || true
  # The task queue and the retry and dead queues agentctl declared beside it.
  for q in $(rabbitmqctl -q list_queues name </dev/null 2>/dev/null | grep "^$QUEUE" || true); do
    rabbitmqctl delete_queue "$q" </dev/null >/dev/null 2>&1 || true
  done
  rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 1 240); do curl -sf "127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.5; done
if [ $MODE = perf ]; then
  SEND=("$BIN" send github:issues.labeled --url "http://127.0.0.1:$PORT" --concurrency 64)
  "${SEND[@]}" --count 2000 >/dev/null
  perf record -F 2000 -g --call-graph dwarf,16384 -p $PID -o "$OUT/perf.data" >/dev/null 2>&1 &
  PERF=$!
  sleep 0.3
  "${SEND[@]}" --count "$COUNT" --file "$ROOT/../shared/bench/issues_labeled.json" --event issues "$@" | head -3
  kill -INT $PERF; wait $PERF || true
  echo "profile: $OUT/perf.data"
else
  SEND=("$BIN" send github:issues.labeled --url "http://127.0.0.1:$PORT" --concurrency 16 "$@")
  "${SEND[@]}" --count 200 >/dev/null
  callgrind_control -i on $PID >/dev/null
  "${SEND[@]}" --count "$COUNT" | head -3
  sleep 3
  callgrind_control -d $PID >/dev/null
  echo "profile: $(ls -t "$OUT"/callgrind.out.* | head -1)"
fi
