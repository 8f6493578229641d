#!/usr/bin/env python3
"""Key press to screen change, measured through a tmux control-mode client: it sends a key to
the console's pane and times until the pane's output contains the text that key brings up
(`Jobs (` for `2`, `Events (` for `1`). One long-lived client instead of a capture-pane per
poll, so the probe itself costs almost nothing while a flood runs.

    python3 scripts/key_latency.py SOCKET SESSION COUNT [UNTIL_PID]

Prints one latency in milliseconds per line. Stops after COUNT presses, or when UNTIL_PID
(e.g. the load generator) exits.
"""
import os
import select
import subprocess
import sys
import time


def alive(pid):
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def main():
    sock, session, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    until = int(sys.argv[4]) if len(sys.argv) > 4 else None
    client = subprocess.Popen(
        ["tmux", "-L", sock, "-C", "attach", "-t", session, "-f", "ignore-size"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
    )
    fd = client.stdout.fileno()
    buf = b""

    def drain(deadline, want):
        nonlocal buf
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.05)
            if not r:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return False
            buf += chunk
            lines = buf.split(b"\n")
            buf = lines.pop()
            for line in lines:
                if want is not None and line.startswith(b"%output") and want in line:
                    return True
        return False

    drain(time.monotonic() + 0.5, None)
    keys = [(b"2", b"Jobs ("), (b"1", b"Events (")]
    for i in range(count):
        if not alive(until):
            break
        key, want = keys[i % 2]
        t0 = time.monotonic()
        client.stdin.write(b"send-keys -t " + session.encode() + b" " + key + b"\n")
        if drain(t0 + 5.0, want):
            print(round((time.monotonic() - t0) * 1000, 1), flush=True)
        else:
            print("timeout", flush=True)
        drain(time.monotonic() + 0.3, None)
    client.stdin.close()
    client.terminate()


if __name__ == "__main__":
    main()
