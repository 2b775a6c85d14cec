#!/usr/bin/env bash
# The API against its own OpenAPI document: `trellis serve` on a free port with a fresh
# SQLite database, the examples loaded and an admin token, then schemathesis (no 5xx, no
# response that breaks the schema). The server stops when the check ends.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
EXAMPLES="${SCHEMA_CHECK_EXAMPLES:-10}"

WORK="$(mktemp -d)"
export TRELLIS_VAR_DIR="$WORK" DATABASE_URL="sqlite:///$WORK/trellis.sqlite3"
export TRELLIS_WORKERS=1 TRELLIS_LOG_LEVEL=ERROR
unset REDIS_URL
PORT="$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
SERVER=""

stop() {
  if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER"
    wait "$SERVER" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap stop EXIT

"$BIN/trellis" migrate --noinput -v 0
"$BIN/trellis" workflow sync >/dev/null
"$BIN/trellis" createadmin --username schema-check >/dev/null
KEY="$("$BIN/trellis" token create --user schema-check --scope admin --name schema-check 2>/dev/null)"

"$BIN/trellis" serve --host 127.0.0.1 --port "$PORT" >"$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do
  "$BIN/python" -c "import urllib.request as u; u.urlopen('$BASE/api/v1/health', timeout=2)" \
    2>/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/serve.log"; exit 1; }
  sleep 0.2
done

echo "schemathesis against $BASE/api/v1/schema/ ($EXAMPLES examples per operation)"
SCHEMATHESIS="$(cd "$BIN" && pwd)/schemathesis"
cd "$WORK"  # schemathesis keeps its example database in the working directory
"$SCHEMATHESIS" run "$BASE/api/v1/schema/" \
  --header "Authorization: Bearer $KEY" \
  --checks not_a_server_error,response_schema_conformance \
  --max-examples "$EXAMPLES" \
  --seed 1 \
  --workers 1 \
  --request-timeout 70 \
  --wait-for-schema 30 \
  --suppress-health-check all \
  --no-color \
  --output-truncate true \
  || { status=$?; echo "--- server log"; tail -50 "$WORK/serve.log"; exit "$status"; }
