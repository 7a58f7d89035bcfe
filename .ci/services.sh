#!/usr/bin/env bash
# Makes sure Redis and PostgreSQL run on loopback for the tests, and prints the variables the tests read:
#
#     eval "$(.ci/services.sh)"
#
# prints `export RECOVERABLE_TEST_REDIS_URL=...` and `export RECOVERABLE_TEST_POSTGRES_URL=...` (see
# tests/services.py). Idempotent and quick when everything is there: a package is installed with apt-get
# only when its binaries are missing, and a server is started only when it does not answer yet. The
# servers keep running after the tests (the next run finds them up); their data, sockets and logs live in
# $RECOVERABLE_CI_SERVICES_DIR (default /tmp/recoverable-ci-services). Everything but the exports goes to
# stderr.
#
# Redis runs with appendonly yes and appendfsync always, the setting under which the Redis storage client
# is durable; PostgreSQL with trust authentication on 127.0.0.1 only.
set -euo pipefail

STATE_DIR="${RECOVERABLE_CI_SERVICES_DIR:-/tmp/recoverable-ci-services}"
REDIS_PORT="${RECOVERABLE_CI_REDIS_PORT:-56379}"
PG_PORT="${RECOVERABLE_CI_POSTGRES_PORT:-55432}"
START_TIMEOUT_SECS=60

log() { echo "services: $*" >&2; }
die() { log "$*"; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
APT_UPDATED=""

apt_install() {
    command -v apt-get >/dev/null || die "cannot install $* (no apt-get here): install it by hand"
    if [ -z "$APT_UPDATED" ]; then
        log "apt-get update"
        $SUDO apt-get update -qq >&2
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >&2
}

# --- Redis ------------------------------------------------------------------------------------------

redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    apt_install redis-server
fi
if redis_up; then
    log "redis already answers on 127.0.0.1:$REDIS_PORT"
else
    mkdir -p "$STATE_DIR/redis"
    log "starting redis-server on 127.0.0.1:$REDIS_PORT"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$STATE_DIR/redis" \
        --save "" --appendonly yes --appendfsync always \
        --daemonize yes --pidfile "$STATE_DIR/redis/redis.pid" --logfile "$STATE_DIR/redis/redis.log" >&2
    for _ in $(seq $((START_TIMEOUT_SECS * 10))); do
        redis_up && break
        sleep 0.1
    done
    redis_up || { tail -n 30 "$STATE_DIR/redis/redis.log" >&2 || true; die "redis-server did not start"; }
fi

# --- PostgreSQL -------------------------------------------------------------------------------------

pg_bindir() {
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        local dir
        dir="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
        if [ -x "$dir/postgres" ] && [ -x "$dir/pg_isready" ]; then echo "$dir"; return; fi
    fi
    # Debian and Ubuntu keep the server binaries off PATH, one folder per major version.
    find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1
}

BINDIR="$(pg_bindir)"
if [ -z "$BINDIR" ] || [ ! -x "$BINDIR/postgres" ]; then
    apt_install postgresql
    BINDIR="$(pg_bindir)"
    [ -n "$BINDIR" ] || die "postgresql is installed but its binaries (initdb, pg_ctl, postgres) were not found"
fi

# PostgreSQL refuses to run as root: as root, run it as the user postgres (the package creates it).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_up() { "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

if pg_up; then
    log "postgres already answers on 127.0.0.1:$PG_PORT"
else
    PG_DIR="$STATE_DIR/postgres"
    mkdir -p "$PG_DIR"
    chmod 755 "$STATE_DIR"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$PG_DIR"; fi
    if [ ! -s "$PG_DIR/data/PG_VERSION" ]; then
        log "initdb $PG_DIR/data"
        as_pg "$BINDIR/initdb" --pgdata "$PG_DIR/data" -U postgres -A trust -E UTF8 >&2
    fi
    log "starting postgres on 127.0.0.1:$PG_PORT"
    as_pg "$BINDIR/pg_ctl" --pgdata "$PG_DIR/data" --log "$PG_DIR/postgres.log" --wait --timeout "$START_TIMEOUT_SECS" \
        -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=300" start >&2 \
        || { tail -n 30 "$PG_DIR/postgres.log" >&2 || true; die "postgres did not start"; }
    pg_up || die "postgres started but does not answer on 127.0.0.1:$PG_PORT"
fi

echo "export RECOVERABLE_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
echo "export RECOVERABLE_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
