# Multi-stage build: compile in the Rust image, run in a slim Debian with the binary, the
# handler scripts and what they need. One image for every mode:
#   docker run agentctl                              -> --no-tui --mode webhook (the default CMD)
#   docker run agentctl --no-tui --mode consumer     -> the worker (set AGENTCTL_WORKER_COMMAND)
# The data dir /var/lib/agentctl (journal, outbox, generated secrets, task logs) is a volume:
# give every container its own; two running agentctl must never share one (see README).
FROM rust:1.89-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: a change under src/ does not rebuild every crate.
# `touch` below makes cargo rebuild the crate itself (COPY keeps the files' old mtimes).
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin agentctl \
    && rm -rf src
COPY . .
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin agentctl

FROM debian:bookworm-slim
# tini: PID 1 that forwards SIGTERM to agentctl and reaps whatever a handler leaves orphaned.
# curl: the HEALTHCHECK. git, python3 (and curl): what assets/handlers/agent-example.sh uses;
# `--build-arg HANDLER_PACKAGES=` leaves them out, or name your agent's own packages there.
ARG HANDLER_PACKAGES="git python3"
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl tini bubblewrap ${HANDLER_PACKAGES} \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 agentctl \
    && useradd --system --uid 10001 --gid agentctl --home-dir /var/cache/agentctl --create-home \
       --shell /usr/sbin/nologin agentctl \
    && install -d -m 0700 -o agentctl -g agentctl /var/lib/agentctl /var/cache/agentctl/work
COPY --from=build /src/target/release/agentctl /usr/local/bin/agentctl
COPY config.toml.example /etc/agentctl/config.toml.example
COPY assets/handlers /usr/local/share/agentctl/handlers
USER agentctl
WORKDIR /var/lib/agentctl
# The data dir is the volume. WEBHOOK_SERVER_HOST (the original design's name, below the
# config file's port and AGENTCTL_LISTEN_ADDR in precedence) makes the listener reachable
# from outside the container; it listens on port 8000 unless told otherwise. NO_COLOR: plain
# log lines (`docker logs` is no terminal).
# The handlers' work dirs (and HOME) are outside the data dir, in the container's own layer.
# bubblewrap is installed for [worker] sandbox = "bwrap" (AGENTCTL_WORKER_SANDBOX=bwrap); it
# needs user namespaces, which Docker's default seccomp profile refuses: run such a container
# with --security-opt seccomp=unconfined (or a profile that allows unshare/clone of user
# namespaces), and on AppArmor hosts --security-opt apparmor=unconfined.
ENV AGENTCTL_STORAGE_DATA_DIR=/var/lib/agentctl \
    AGENTCTL_WORKER_WORK_DIR=/var/cache/agentctl/work \
    HOME=/var/cache/agentctl \
    WEBHOOK_SERVER_HOST=0.0.0.0 \
    NO_COLOR=1
VOLUME ["/var/lib/agentctl"]
EXPOSE 8000
# /ready = the journal takes a write. Only the listener modes (webhook, all) answer HTTP:
# docker-compose.yml turns this check off for the consumer and the producer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${WEBHOOK_SERVER_PORT:-8000}/ready" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "agentctl"]
# A container has no terminal: always headless.
CMD ["--no-tui", "--mode", "webhook"]
