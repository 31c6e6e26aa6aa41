#!/usr/bin/env bash
# Run pytest as if it were another date: tests/support/at_date.sh "2027-01-04 00:00:30" [pytest args]
# Needs Debian's faketime. The tests and the app processes they start (gunicorn, flask)
# see the shifted wall clock, ticking from that instant; our redis-server and PostgreSQL
# keep the real one (tests/support/procs.py), and monotonic clocks are not shifted.
set -euo pipefail
target="$1"
shift
cd "$(dirname "$0")/../.."
command -v faketime >/dev/null || { echo "at_date: apt-get install -y faketime" >&2; exit 2; }
offset=$(($(date -u -d "$target" +%s) - $(date -u +%s)))
export FAKETIME_DONT_FAKE_MONOTONIC=1
export PYTHONPATH="$PWD/tests/support/faketime${PYTHONPATH:+:$PYTHONPATH}"
exec faketime -f "+${offset}s" .venv/bin/pytest "$@"
