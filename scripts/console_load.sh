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
PIDS=()
trap 'tmux -L $SOCK kill-server 2>/dev/null || true; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT

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

flood() { # $1 pid, $2 config, $3 label: prints "cpu rss rps"
  read -r cpu rss < <(measure "$1" "$BIN" --config "$2" send github:issues.labeled --count "$COUNT" --concurrency "$CONC")
  local rps; rps=$(sed -n 's/.*: \([0-9.]*\) requests\/s$/\1/p' "$WORK/last_out" | head -1)
  echo "  $3: $(head -2 "$WORK/last_out" | tr '\n' ' ')" >&2
  echo "$cpu $rss $rps"
}

# Both instances run side by side (own data dir and port); each is flooded in turn while the
# other idles, ROUNDS times in alternating order, so drift on the machine hits both alike.
ROUNDS=${ROUNDS:-3}
echo "agentctl console vs headless: $COUNT deliveries at concurrency $CONC, $ROUNDS rounds, idle ${IDLE}s, broker ${AMQP_URL:+RabbitMQ}${AMQP_URL:-embedded}" >&2
hcfg=$(config headless)
# HEADLESS_LOG=/dev/null for a baseline that pays nothing for its log lines.
"$BIN" --config "$hcfg" --no-tui 2>"${HEADLESS_LOG:-$WORK/headless.log}" &
hpid=$!
PIDS+=("$hpid")
ccfg=$(config console)
tmux -L "$SOCK" new-session -d -s load -x 160 -y 45 "'$BIN' --config $ccfg"
cpid=$(pid_of "$ccfg")
wait_listen "$hcfg"; wait_listen "$ccfg"
read -r h_idle_cpu h_idle_rss < <(measure "$hpid" sleep "$IDLE")
read -r c_idle_cpu c_idle_rss < <(measure "$cpid" sleep "$IDLE")
: >"$WORK/h.runs"; : >"$WORK/c.runs"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then
    flood "$hpid" "$hcfg" "headless round $r" >>"$WORK/h.runs"; flood "$cpid" "$ccfg" "console  round $r" >>"$WORK/c.runs"
  else
    flood "$cpid" "$ccfg" "console  round $r" >>"$WORK/c.runs"; flood "$hpid" "$hcfg" "headless round $r" >>"$WORK/h.runs"
  fi
done
# Then one more flood on the console with a key pressed every ~0.3 s (1 and 2 alternate the
# view), timed through a tmux control-mode client.
"$BIN" --config "$ccfg" send github:issues.labeled --count "$COUNT" --concurrency "$CONC" >"$WORK/keys_send.out" &
sender=$!
PIDS+=("$sender")
sleep 1
python3 scripts/key_latency.py "$SOCK" load 40 "$sender" >"$WORK/keys.ms"
wait "$sender" || true
echo "  console with key presses: $(head -2 "$WORK/keys_send.out" | tr '\n' ' ')" >&2
echo "  console header at the end: $(tmux -L "$SOCK" capture-pane -p -t load | sed -n 2p)" >&2
tmux -L "$SOCK" send-keys -t load q
kill -TERM "$hpid"; wait "$hpid" 2>/dev/null || true
for _ in $(seq 1 100); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done

keys=$(grep -v timeout "$WORK/keys.ms" | sort -n | tr '\n' ' ')
timeouts=$(grep -c timeout "$WORK/keys.ms" || true)
echo "  key presses without a screen change within 5 s: $timeouts" >&2
python3 - "$h_idle_cpu" "$h_idle_rss" "$c_idle_cpu" "$c_idle_rss" "$WORK/h.runs" "$WORK/c.runs" "$keys" <<'EOF2'
import statistics, sys
h_idle_cpu, h_idle_rss, c_idle_cpu, c_idle_rss = map(float, sys.argv[1:5])
runs = lambda f: [list(map(float, l.split())) for l in open(f) if l.strip()]
h, c = runs(sys.argv[5]), runs(sys.argv[6])
med = lambda rows, i: statistics.median(r[i] for r in rows)
keys = sorted(float(x) for x in sys.argv[7].split())
pct = lambda p: keys[min(len(keys) - 1, int(p * len(keys)))] if keys else float('nan')
print("| | headless (--no-tui) | console (tmux) | console / headless |")
print("|---|---|---|---|")
print(f"| idle CPU (% of a core) | {h_idle_cpu:.2f} | {c_idle_cpu:.2f} | |")
print(f"| idle RSS (MiB) | {h_idle_rss:.1f} | {c_idle_rss:.1f} | {c_idle_rss/h_idle_rss:.2f} |")
print(f"| flood CPU (% of a core, median) | {med(h,0):.0f} | {med(c,0):.0f} | {med(c,0)/med(h,0):.2f} |")
print(f"| flood peak RSS (MiB, max) | {max(r[1] for r in h):.1f} | {max(r[1] for r in c):.1f} | {max(r[1] for r in c)/max(r[1] for r in h):.2f} |")
print(f"| flood throughput (req/s, median of {len(h)}) | {med(h,2):.0f} | {med(c,2):.0f} | {med(c,2)/med(h,2):.3f} |")
print(f"| each round (req/s) | {' / '.join(f'{r[2]:.0f}' for r in h)} | {' / '.join(f'{r[2]:.0f}' for r in c)} | |")
print(f"| key → screen change under the flood (ms, n={len(keys)}) | | p50 {pct(0.5)}, p90 {pct(0.9)}, max {keys[-1] if keys else 'nan'} | |")
EOF2
