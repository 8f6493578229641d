#!/bin/sh
# Demo handler for agentctl: reads the task, reports progress, and fails on demand.
#   DEMO_FAIL=1             every attempt fails (exit 3)
#   DEMO_FAIL_ATTEMPTS=N    attempts 1..N fail, later ones succeed
#   DEMO_STEP_SECS=S        seconds per step (default 0.2; 4 steps)
# Configure it with:  [worker] command = ["sh", "assets/handlers/demo.sh"]
set -eu
task=$(cat)
echo "task $AGENTCTL_TASK_ID: $AGENTCTL_SOURCE $AGENTCTL_KIND $AGENTCTL_REPO#$AGENTCTL_NUMBER (attempt $AGENTCTL_ATTEMPT)"
echo "task file: $AGENTCTL_TASK_FILE ($(printf '%s' "$task" | wc -c) bytes on stdin)"
step=${DEMO_STEP_SECS:-0.2}
for p in 25 50 75; do
  sleep "$step"
  echo "::progress $p step $p"
done
if [ "${DEMO_FAIL:-0}" = 1 ] || [ "$AGENTCTL_ATTEMPT" -le "${DEMO_FAIL_ATTEMPTS:-0}" ]; then
  echo "failing on purpose (attempt $AGENTCTL_ATTEMPT)" >&2
  exit 3
fi
sleep "$step"
echo "::progress 100 done"
