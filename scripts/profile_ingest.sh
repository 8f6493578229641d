#!/bin/bash
# Instruction profile of agentctl's ingest path (README "Where the time goes"): the release
# binary under callgrind, SQLite journal, RabbitMQ on 127.0.0.1:5672, 200 deliveries to warm up,
# then COUNT deliveries with instrumentation on. Writes target/profile/callgrind.out.*; read it
# with `callgrind_annotate --inclusive=yes FILE`.
#   scripts/profile_ingest.sh [COUNT] [extra agentctl send flags...]
set -euo pipefail
COUNT=${1:-2000}; shift || true
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/agentctl
OUT=$ROOT/target/profile
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
mkdir -p "$OUT"
DATA=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
QUEUE=profile_$$
export AGENTCTL_GITHUB_WEBHOOK_SECRET=profile-secret
AGENTCTL_STORAGE_DATA_DIR=$DATA AGENTCTL_LISTEN_ADDR=127.0.0.1:$PORT \
  AGENTCTL_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/%2f AGENTCTL_BROKER_QUEUE=$QUEUE \
  AGENTCTL_LOG=info valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$OUT/callgrind.out.%p" "$BIN" --no-tui --mode webhook >/dev/null 2>"$DATA/log" &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"; rabbitmqctl delete_queue $QUEUE >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 240); do curl -sf "127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.5; done
SEND=("$BIN" send github:issues.labeled --url "http://127.0.0.1:$PORT" --concurrency 16 "$@")
"${SEND[@]}" --count 200 >/dev/null
callgrind_control -i on $PID >/dev/null
"${SEND[@]}" --count "$COUNT" | head -3
sleep 3
callgrind_control -d $PID >/dev/null
echo "profile: $(ls -t "$OUT"/callgrind.out.* | head -1)"
