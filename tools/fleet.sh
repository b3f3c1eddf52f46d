#!/usr/bin/env bash
# A local fleet in one command (`make fleet`): a redis-server of its own (append-only file in a
# temporary folder, a random password) and two styletx-server replicas sharing it on
# localhost:50051 and localhost:50052. Ctrl-C stops all three and removes the folder.
# Ports: FIRST_PORT, REDIS_PORT, METRICS_FIRST_PORT; REPLICAS; extra arguments go to the servers.
set -euo pipefail
BIN=${BIN:-.venv/bin}
REPLICAS=${REPLICAS:-2}
FIRST_PORT=${FIRST_PORT:-50051}
REDIS_PORT=${REDIS_PORT:-6390}
METRICS_FIRST_PORT=${METRICS_FIRST_PORT:-9090}
if ! command -v redis-server >/dev/null 2>&1; then
  bash tools/system_tools.sh --redis
fi
command -v redis-server >/dev/null 2>&1 || { echo "redis-server is needed (Debian: apt-get install redis-server)" >&2; exit 1; }
dir=$(mktemp -d -t styletx-fleet.XXXXXX)
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM
printf 'port %s\nbind 127.0.0.1\ndir "%s"\nappendonly yes\nappendfsync everysec\nmaxmemory-policy noeviction\nsave ""\nrequirepass %s\n' \
  "$REDIS_PORT" "$dir" "$password" | redis-server - >"$dir/redis.log" 2>&1 &
pids+=($!)
export STYLETX_STORE="redis://:${password}@127.0.0.1:${REDIS_PORT}/0"
for i in $(seq 0 $((REPLICAS - 1))); do
  port=$((FIRST_PORT + i))
  "$BIN/styletx-server" --address "127.0.0.1:${port}" --metrics-port $((METRICS_FIRST_PORT + i)) "$@" 2>"$dir/replica-$i.log" &
  pids+=($!)
  echo "replica $i: localhost:${port} (metrics :$((METRICS_FIRST_PORT + i)), log $dir/replica-$i.log)"
done
echo "store: redis on 127.0.0.1:${REDIS_PORT} (password in STYLETX_STORE of the replicas)"
echo "try: $BIN/styletx-client stylize examples/content_chelsea.png examples/style_starry_night.jpg -o out.png --server localhost:${FIRST_PORT}"
echo "     $BIN/styletx-client job get KEY --server localhost:$((FIRST_PORT + 1))   # any replica answers"
echo "Ctrl-C stops the fleet"
wait -n "${pids[@]}"
