#!/usr/bin/env bash
# `make run`: a local engagement-loops on SQLite and a local Redis, with demo data.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export PORT="${PORT:-5000}"
export TZ=UTC
mkdir -p instance

# Local settings live in .env (git-ignored): every `flask` command and the app itself
# read it, environment variables win over it. Written once, so that a `flask …`
# typed in another shell finds the same SECRET_KEY and database.
new_secret() { "$BIN/python" -c 'import secrets; print(secrets.token_hex(32))'; }
if [ ! -e .env ]; then
  cat > .env <<ENV
# Local settings written by \`make run\` (git-ignored); environment variables win.
# Every variable is described in README.md, "Configuration".
FLASK_APP=wsgi
SECRET_KEY=$(new_secret)
LOOPS_ENABLED=true
ENV
  echo "Wrote .env: FLASK_APP=wsgi, a generated SECRET_KEY, LOOPS_ENABLED=true"
elif [ -z "${SECRET_KEY:-}" ] && ! grep -q '^[[:space:]]*\(export[[:space:]]\+\)\?SECRET_KEY=.' .env; then
  printf '\n# Added by `make run`: a generated key for local sessions.\nSECRET_KEY=%s\n' \
    "$(new_secret)" >> .env
  echo "Added a generated SECRET_KEY to .env"
fi

# Also checks every setting: a bad one stops here with one line naming it.
"$BIN/flask" db upgrade

REDIS_URL="$("$BIN/python" -c 'from dashboard.config import read_settings; print(read_settings().REDIS_URL)')"
if ! "$BIN/python" -c "import redis,sys; redis.Redis.from_url('$REDIS_URL', socket_connect_timeout=1).ping()" 2>/dev/null; then
  port="$("$BIN/python" -c "from urllib.parse import urlparse; print(urlparse('$REDIS_URL').port or 6379)")"
  echo "Starting a local redis-server on port $port ..."
  redis-server --daemonize yes --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$PWD/instance" --logfile "$PWD/instance/redis.log"
  sleep 0.5
fi

"$BIN/flask" demo seed

cat <<MSG

  engagement-loops is starting at  http://127.0.0.1:${PORT}/
  Processes (Procfile.dev): web, an RQ worker, the scheduler (weekly tune, cron in UTC)
  Demo logins:  admin@example.com / demo-admin-pass   (admin: can press Run now)
                viewer@example.com / demo-viewer-pass (viewer: read-only)
  API token for a demo member:  $BIN/flask tokens create ana.0@acme.example.com

MSG
# The processes read .env themselves, environment first; honcho would let .env win.
exec "$BIN/honcho" start -f Procfile.dev --env /dev/null
