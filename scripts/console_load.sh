#!/usr/bin/env bash
# Measures the terminal console against headless mode, in one run on this machine:
#   - CPU and RSS of agentctl idle (console in tmux vs --no-tui),
#   - the same under a flood of `agentctl send --count N --concurrency C`, and the flood's
#     throughput with the console vs headless,
#   - the delay from a key press (tmux send-keys) to the screen changing, under the flood.
# Usage: scripts/console_load.sh [COUNT] [CONCURRENCY] [IDLE_SECS]   (release build first:
#   cargo build --release). Set AMQP_URL to measure against RabbitMQ instead of the embedded queue.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-50000}
CONC=${2:-32}
IDLE=${3:-30}
BIN=$PWD/target/release/agentctl
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v tmux >/dev/null || { echo "needs tmux" >&2; exit 1; }
HZ=$(getconf CLK_TCK)
WORK=$(mktemp -d)
SOCK=agentctl-load-$$
trap 'tmux -L $SOCK kill-server 2>/dev/null || true; pkill -f "$WORK/config.toml" 2>/dev/null || true; rm -rf "$WORK"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

config() { # $1 = name; a fresh data dir and port per run
  local dir=$WORK/$1 p; p=$(port); mkdir -p "$dir"
  local queue="agentctl_load_$1_$$"
  cat >"$dir/config.toml" <<EOF
[listen]
addr = "127.0.0.1:$p"
[storage]
data_dir = "$dir/data"
[broker]
url = "${AMQP_URL:-}"
queue = "$queue"
EOF
  echo "$dir/config.toml"
}

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
pid_of() { # the agentctl serving $1 (not `send`)
  for _ in $(seq 1 100); do
    local p; p=$(pgrep -f "agentctl --config $1\$" | head -1 || true)
    [ -n "$p" ] && { echo "$p"; return; }
    sleep 0.1
  done
  echo "agentctl did not start" >&2; exit 1
}
wait_listen() { # $1 config
  local addr; addr=$(sed -n 's/^addr = "\(.*\)"/\1/p' "$1")
  for _ in $(seq 1 100); do curl -sf "http://$addr/health" >/dev/null && return; sleep 0.1; done
  echo "listener did not come up" >&2; exit 1
}
# CPU % of one core and peak RSS over a command's run: $1 pid, rest = command
measure() {
  local pid=$1; shift
  local t0 c0 peak=0 out
  t0=$(date +%s.%N); c0=$(cpu_ticks "$pid")
  ( while kill -0 "$pid" 2>/dev/null; do r=$(rss_kib "$pid" 2>/dev/null || echo 0); echo "$r"; sleep 0.2; done ) >"$WORK/rss.$pid" &
  local sampler=$!
  out=$("$@")
  local c1 t1; c1=$(cpu_ticks "$pid"); t1=$(date +%s.%N)
  kill "$sampler" 2>/dev/null || true
  peak=$(sort -n "$WORK/rss.$pid" | tail -1)
  echo "$out" >"$WORK/last_out"
  python3 -c "print(f'{100*($c1-$c0)/$HZ/($t1-$t0):.2f} {${peak:-0}/1024:.1f}')"
}

run_headless() {
  local cfg; cfg=$(config headless)
  "$BIN" --config "$cfg" --no-tui 2>"$WORK/headless.log" &
  local pid=$!
  wait_listen "$cfg"
  read -r idle_cpu idle_rss < <(measure "$pid" sleep "$IDLE")
  read -r flood_cpu flood_rss < <(measure "$pid" "$BIN" --config "$cfg" send github:issues.labeled --count "$COUNT" --concurrency "$CONC")
  local rps; rps=$(sed -n 's/.*throughput: *\([0-9.]*\) req\/s.*/\1/p' "$WORK/last_out" | head -1)
  grep -E "throughput|p50|p99" "$WORK/last_out" | sed 's/^/  headless: /' >&2
  kill -TERM "$pid"; wait "$pid" || true
  echo "$idle_cpu $idle_rss $flood_cpu $flood_rss $rps"
}

run_console() {
  local cfg; cfg=$(config console)
  tmux -L "$SOCK" new-session -d -s load -x 160 -y 45 "'$BIN' --config $cfg"
  local pid; pid=$(pid_of "$cfg")
  wait_listen "$cfg"
  read -r idle_cpu idle_rss < <(measure "$pid" sleep "$IDLE")
  # Key latency under the flood: the flood runs in the background; keys 1/2 alternate views.
  "$BIN" --config "$cfg" send github:issues.labeled --count "$COUNT" --concurrency "$CONC" >"$WORK/console_send.out" &
  local sender=$!
  read -r flood_cpu flood_rss < <(measure "$pid" bash -c "
    lat=()
    sleep 1
    for i in \$(seq 1 20); do
      kill -0 $sender 2>/dev/null || break
      if [ \$((i % 2)) = 1 ]; then key=2; want='┌ Jobs'; else key=1; want='┌ Events'; fi
      t0=\$(date +%s%N)
      tmux -L $SOCK send-keys -t load \$key
      until tmux -L $SOCK capture-pane -p -t load | grep -q \"\$want\"; do sleep 0.005; done
      t1=\$(date +%s%N)
      echo \$(( (t1 - t0) / 1000000 )) >>'$WORK/keys.ms'
      sleep 0.3
    done
    wait $sender")
  local rps; rps=$(sed -n 's/.*throughput: *\([0-9.]*\) req\/s.*/\1/p' "$WORK/console_send.out" | head -1)
  grep -E "throughput|p50|p99" "$WORK/console_send.out" | sed 's/^/  console:  /' >&2
  local screen; screen=$(tmux -L "$SOCK" capture-pane -p -t load | head -2)
  echo "  console header after the flood: $(echo "$screen" | tail -1)" >&2
  tmux -L "$SOCK" send-keys -t load q
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  echo "$idle_cpu $idle_rss $flood_cpu $flood_rss $rps"
}

echo "agentctl console vs headless: $COUNT deliveries at concurrency $CONC, idle ${IDLE}s, broker ${AMQP_URL:+RabbitMQ}${AMQP_URL:-embedded}" >&2
read -r h_idle_cpu h_idle_rss h_cpu h_rss h_rps < <(run_headless)
read -r c_idle_cpu c_idle_rss c_cpu c_rss c_rps < <(run_console)
keys=$(sort -n "$WORK/keys.ms" | tr '\n' ' ')
python3 - "$h_idle_cpu" "$h_idle_rss" "$h_cpu" "$h_rss" "$h_rps" "$c_idle_cpu" "$c_idle_rss" "$c_cpu" "$c_rss" "$c_rps" "$keys" <<'EOF'
import sys
h = list(map(float, sys.argv[1:6])); c = list(map(float, sys.argv[6:11]))
keys = sorted(int(x) for x in sys.argv[11].split())
pct = lambda p: keys[min(len(keys) - 1, int(p * len(keys)))] if keys else float('nan')
print(f"| | headless (--no-tui) | console (tmux) | console / headless |")
print(f"|---|---|---|---|")
print(f"| idle CPU (% of a core) | {h[0]:.2f} | {c[0]:.2f} | |")
print(f"| idle RSS (MiB) | {h[1]:.1f} | {c[1]:.1f} | {c[1]/h[1]:.2f} |")
print(f"| flood CPU (% of a core) | {h[2]:.0f} | {c[2]:.0f} | {c[2]/h[2]:.2f} |")
print(f"| flood peak RSS (MiB) | {h[3]:.1f} | {c[3]:.1f} | {c[3]/h[3]:.2f} |")
print(f"| flood throughput (req/s) | {h[4]:.0f} | {c[4]:.0f} | {c[4]/h[4]:.3f} |")
print(f"| key → screen change under the flood (ms, n={len(keys)}) | | p50 {pct(0.5)}, p90 {pct(0.9)}, max {keys[-1] if keys else 'nan'} | |")
EOF
