#!/usr/bin/env bash
# `make run`: a local engagement-loops on SQLite and a local Redis, with demo data.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export FLASK_APP=wsgi
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export LOOPS_ENABLED="${LOOPS_ENABLED:-true}"
export PORT="${PORT:-5000}"
export TZ=UTC
mkdir -p instance

# A stable secret for local sessions, created once and kept out of git.
if [ -z "${SECRET_KEY:-}" ]; then
  [ -s instance/dev-secret-key ] || "$BIN/python" -c 'import secrets; print(secrets.token_hex(32))' > instance/dev-secret-key
  SECRET_KEY="$(cat instance/dev-secret-key)"
  export SECRET_KEY
fi

if ! "$BIN/python" -c "import redis,sys; redis.Redis.from_url('$REDIS_URL', socket_connect_timeout=1).ping()" 2>/dev/null; then
  port="$("$BIN/python" -c "from urllib.parse import urlparse; print(urlparse('$REDIS_URL').port or 6379)")"
  echo "Starting a local redis-server on port $port ..."
  redis-server --daemonize yes --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$PWD/instance" --logfile "$PWD/instance/redis.log"
  sleep 0.5
fi

"$BIN/flask" db upgrade
"$BIN/flask" demo seed

cat <<MSG

  engagement-loops is starting at  http://127.0.0.1:${PORT}/
  Processes (Procfile.dev): web, an RQ worker, the scheduler (weekly tune, cron in UTC)
  Demo logins:  admin@example.com / demo-admin-pass   (admin: can press Run now)
                viewer@example.com / demo-viewer-pass (viewer: read-only)
  API token for a demo member:  $BIN/flask tokens create ana.0@acme.example.com

MSG
exec "$BIN/honcho" start -f Procfile.dev
