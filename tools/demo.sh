#!/usr/bin/env bash
# `make demo`: start the server on localhost, wait for SERVING, stylize the bundled samples through
# the client SDK's CLI (progress bar), write the result and a side-by-side picture, stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${DEMO_BIN:-.venv/bin}"  # the commands of another environment (tests/e2e/test_quiet_newcomer.py)
PORT="${DEMO_PORT:-50051}"
ADDR="127.0.0.1:${PORT}"
OUT="${DEMO_OUT:-out}"
mkdir -p "$OUT"
LOG="$OUT/server.log"

echo "starting styletx-server on $ADDR (log: $LOG)"
"$BIN/styletx-server" --address "$ADDR" --metrics-port 0 --log-level INFO >"$LOG" 2>&1 &
SERVER=$!
stop() {
  if kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER" && wait "$SERVER" || true
  fi
}
trap stop EXIT

echo -n "waiting for SERVING"
for _ in $(seq 1 180); do
  if "$BIN/styletx-client" health --server "$ADDR" --timeout 2 >/dev/null 2>&1; then
    echo " ok"
    break
  fi
  if ! kill -0 "$SERVER" 2>/dev/null; then
    echo; echo "server exited early; last log lines:"; tail -20 "$LOG"; exit 1
  fi
  echo -n "."
  sleep 1
done
"$BIN/styletx-client" health --server "$ADDR" --timeout 2 >/dev/null

"$BIN/styletx-client" stylize \
  examples/content_chelsea.png examples/style_starry_night.jpg \
  --server "$ADDR" --preset fast --seed 1 \
  -o "$OUT/result.png" --side-by-side "$OUT/side_by_side.png" "$@"
echo "result: $OUT/result.png   side by side: $OUT/side_by_side.png"
