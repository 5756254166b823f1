#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the test suite and print
# its URL on stdout; `postgres.sh --stop URL` stops it and removes its folder.
# Installs the Debian package when it is missing. Used by .ci/run; also handy
# on a developer machine:
#   export PIPEKIT_TEST_POSTGRES_URL=$(bash .ci/postgres.sh)
set -euo pipefail
as_owner=()
[ "$(id -u)" = 0 ] && as_owner=(runuser -u postgres --)
if [ "${1:-}" = "--stop" ]; then
    port=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).port)' "$2")
    datadir=$(cat "/tmp/pipekit-pg-$port.dir")
    bindir=$(cat "$datadir/bindir")
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$datadir/data" -m fast stop >&2
    rm -rf "$datadir" "/tmp/pipekit-pg-$port.dir"
    exit 0
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql) >&2
    else
        echo "postgres.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2
        exit 1
    fi
fi
bindir=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
datadir=$(mktemp -d /tmp/pipekit-pg.XXXXXX)
chmod 755 "$datadir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
if [ "$(id -u)" = 0 ]; then
    # initdb refuses to run as root: the data folder belongs to the postgres user.
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$datadir"
fi
echo "$bindir" > "$datadir/bindir"
echo "$datadir" > "/tmp/pipekit-pg-$port.dir"
pwfile="$datadir/.pw"
echo "$password" > "$pwfile"
[ "$(id -u)" = 0 ] && chown postgres "$pwfile"
"${as_owner[@]}" "$bindir/initdb" -D "$datadir/data" -U pipekit --pwfile="$pwfile" -A scram-sha-256 >&2
rm -f "$pwfile"
"${as_owner[@]}" "$bindir/pg_ctl" -D "$datadir/data" -l "$datadir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $datadir" start >&2
PGPASSWORD=$password "$bindir/createdb" -w -h 127.0.0.1 -p "$port" -U pipekit pipekit_test </dev/null >&2
echo "postgresql://pipekit:$password@127.0.0.1:$port/pipekit_test"
