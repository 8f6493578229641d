#!/usr/bin/env bash
# The test command: installs and starts what the tests need on a fresh machine (RabbitMQ on
# 127.0.0.1:5672; PostgreSQL on 127.0.0.1:5432 with a role and database for the tests; tmux for
# the console's end-to-end test; bubblewrap for the sandbox tests; git), then runs `cargo test`
# with any arguments given (e.g. `scripts/test.sh --test worker`).
#
#   scripts/test.sh --setup-only     # everything but `cargo test`; prints AGENTCTL_TEST_PG_URL
#
# PostgreSQL: an AGENTCTL_TEST_PG_URL already set is used as it is. Otherwise the tests get
# postgres://agentctl_test:agentctl_test@127.0.0.1:5432/agentctl_test: when nothing answers on
# 127.0.0.1:5432, Debian's postgresql is installed if missing and its cluster started (created
# if there is none); the LOGIN/SUPERUSER role agentctl_test and its database are created (or
# reset) through the postgres OS user on the local socket, which works with Debian's default
# authentication (peer on the socket, scram on TCP) as well as with trust.
set -euo pipefail
cd "$(dirname "$0")/.."

setup_only=0
if [ "${1:-}" = "--setup-only" ]; then
  setup_only=1
  shift
fi

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# --- RabbitMQ ------------------------------------------------------------------------------

rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if ! rabbit_up; then
  echo "RabbitMQ is not answering on 127.0.0.1:5672; starting it"
  command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
  rabbitmq-server -detached
  for _ in $(seq 1 120); do
    rabbit_up && break
    sleep 1
  done
  rabbitmqctl await_startup --timeout 120
fi
rabbit_up || { echo "RabbitMQ did not come up on 127.0.0.1:5672" >&2; exit 1; }

# --- PostgreSQL ----------------------------------------------------------------------------

pg_port=5432
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/$pg_port) 2>/dev/null; }
# The newest PostgreSQL server installed from Debian's packages (e.g. 15), or nothing.
pg_server_version() {
  local bin
  for bin in /usr/lib/postgresql/*/bin/postgres; do
    [ -x "$bin" ] && basename "$(dirname "$(dirname "$bin")")"
  done | sort -n | tail -1
}
# Runs a command as the postgres OS user (peer authentication on the socket), from / so the
# server's tools do not complain about a directory they cannot read.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && sudo -n -u postgres -- "$@")
  fi
}

start_postgres() {
  echo "PostgreSQL is not answering on 127.0.0.1:$pg_port; starting it"
  if [ -z "$(pg_server_version)" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql
  fi
  local ver cluster status
  ver=$(pg_server_version)
  [ -n "$ver" ] || { echo "no PostgreSQL server found under /usr/lib/postgresql after installing it" >&2; exit 1; }
  # The cluster on our port: Debian's postinst usually created `<ver> main` (not started where
  # no init system runs, as in a container).
  read -r ver cluster status < <(pg_lsclusters --no-header | awk -v p="$pg_port" '$3 == p { print $1, $2, $4; exit }') || true
  if [ -z "${cluster:-}" ]; then
    ver=$(pg_server_version)
    cluster=main
    # A `main` of this version on another port stays as it is; ours gets its own name.
    if pg_lsclusters --no-header | awk -v v="$ver" '$1 == v && $2 == "main" { found = 1 } END { exit !found }'; then
      cluster=agentctl_test
    fi
    echo "creating PostgreSQL cluster $ver/$cluster on port $pg_port"
    pg_createcluster --port "$pg_port" "$ver" "$cluster"
    status=down
  fi
  if [ "$status" != online ]; then
    pg_ctlcluster --skip-systemctl-redirect "$ver" "$cluster" start
  fi
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p "$pg_port" && break
    sleep 1
  done
}

pg_url_made=0
if [ -n "${AGENTCTL_TEST_PG_URL:-}" ]; then
  echo "PostgreSQL for the tests: AGENTCTL_TEST_PG_URL from the environment"
else
  pg_up || start_postgres
  command -v pg_isready >/dev/null 2>&1 || apt_install postgresql-client
  pg_isready -q -h 127.0.0.1 -p "$pg_port" \
    || { echo "PostgreSQL did not come up on 127.0.0.1:$pg_port" >&2; exit 1; }
  # The tests' role and database, created or reset (the password, LOGIN, the owner). SUPERUSER:
  # the tests create roles (a role's synchronous_commit default) and read the server's TLS
  # certificate (pg_read_file); it is a test cluster's throwaway role. Reset on every run
  # so that a second run, or a role left over from elsewhere, ends in the same state.
  if id postgres >/dev/null 2>&1; then
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p "$pg_port" -d postgres <<'SQL'
SELECT 'CREATE ROLE agentctl_test' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'agentctl_test') \gexec
ALTER ROLE agentctl_test WITH LOGIN SUPERUSER PASSWORD 'agentctl_test';
SELECT 'CREATE DATABASE agentctl_test OWNER agentctl_test' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'agentctl_test') \gexec
ALTER DATABASE agentctl_test OWNER TO agentctl_test;
SQL
  else
    echo "no postgres OS user: assuming the role and database agentctl_test exist on 127.0.0.1:$pg_port" >&2
  fi
  AGENTCTL_TEST_PG_URL="postgres://agentctl_test:agentctl_test@127.0.0.1:$pg_port/agentctl_test"
  pg_url_made=1
fi
export AGENTCTL_TEST_PG_URL
if command -v psql >/dev/null 2>&1; then
  PGCONNECT_TIMEOUT=10 psql -X -q -At "$AGENTCTL_TEST_PG_URL" -c 'select 1' >/dev/null || {
    echo "cannot connect to AGENTCTL_TEST_PG_URL (password and host redacted: ${AGENTCTL_TEST_PG_URL%%://*}://…);" \
      "set AGENTCTL_TEST_PG_URL to a database the tests may use" >&2
    exit 1
  }
else
  echo "psql not installed: AGENTCTL_TEST_PG_URL not checked before the tests" >&2
fi

# --- Tools the tests run -------------------------------------------------------------------

# The console's end-to-end test drives the binary in a real terminal through tmux; the sandbox
# tests run handlers under bubblewrap (bwrap); handlers and tests use git.
missing=()
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v git >/dev/null 2>&1 || missing+=(git)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi

if [ "$setup_only" = 1 ]; then
  echo "ready: RabbitMQ on 127.0.0.1:5672, PostgreSQL at AGENTCTL_TEST_PG_URL; for cargo test by hand:"
  # The test role's URL is no secret; one from the environment is not echoed.
  if [ "$pg_url_made" = 1 ]; then
    echo "export AGENTCTL_TEST_PG_URL='$AGENTCTL_TEST_PG_URL'"
  fi
  exit 0
fi
cargo test "$@"
