#!/usr/bin/env bash
# The rows of the image tables in deploy/README.md and bench/RESULTS.md, measured. For each kind,
# build a commit's tree with tools/image.sh (what `make image` / `make image GPU=1` run), change
# one source file, build again; print the image's size, its largest layer and both build times
# (wall seconds of the whole tools/image.sh call, so they depend on the machine's load: the load
# average is printed with each row). The tree is REV's (default HEAD) from `git archive`, so edits
# in progress in the working tree cannot change it halfway; the images are tagged
# localhost/styletx-table:<version>-<kind>, so those `make image` tagged stay as they were, and
# what this run built is removed at the end. Needs podman or docker, as `make image` does, and
# network access wherever a layer has to be built.
#
#   bench/image_table.sh [--fresh-deps] [--rev REV] [cpu] [gpu]      (default: HEAD, cpu gpu)
#
# --fresh-deps: the first build also rebuilds the `deps` layer (a comment line added to the
#   tree's deploy/docker/requirements.txt), i.e. it is the first build on a machine that has the
#   base: pip installs every third-party package. Without it the first build reuses a `deps` layer
#   already stored (as `make image` left it), and builds one only where there is none.
set -euo pipefail
cd "$(dirname "$0")/.."
FRESH_DEPS=""
REV=HEAD
KINDS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --fresh-deps) FRESH_DEPS=1 ;;
    --rev) REV="${2:?--rev needs a git revision}"; shift ;;
    cpu | gpu) KINDS+=("$1") ;;
    *) echo "usage: bench/image_table.sh [--fresh-deps] [--rev REV] [cpu] [gpu]" >&2; exit 2 ;;
  esac
  shift
done
[ ${#KINDS[@]} -gt 0 ] || KINDS=(cpu gpu)
source tools/container_engine.sh
IMAGE=localhost/styletx-table
COMMIT="$(git rev-parse --short "$REV")"
VERSION="$(git show "$REV:styletx/__init__.py" | sed -n 's/^__version__ = "\(.*\)"$/\1/p')"

work="$(mktemp -d)"
tree="$work/tree"
# Full IDs, without the "sha256:" that `images --no-trunc` puts before them (`inspect` has none).
"$ENGINE" images -a -q --no-trunc | sed 's/^sha256://' | sort -u >"$work/ids-before"
cleanup() {
  local kind id
  for kind in "${KINDS[@]}"; do
    "$ENGINE" rmi "$IMAGE:$VERSION-$kind" >/dev/null 2>&1 || true
  done
  # Every image this run's builds made (each step's "--> ID" in their logs: the build stages
  # and, with --fresh-deps, the deps layers), children first; none that was stored before the
  # run started (steps taken from the cache), and none another build made.
  cat "$work"/build-*.log 2>/dev/null | sed -n 's/^--> \([0-9a-f]\{6,\}\)$/\1/p' | tac \
    >"$work/made" || true
  for _ in 1 2 3; do
    while read -r id; do
      id=$("$ENGINE" image inspect --format '{{.Id}}' "$id" 2>/dev/null) || continue
      grep -qx "$id" "$work/ids-before" || "$ENGINE" rmi "$id" >/dev/null 2>&1 || true
    done <"$work/made"
  done
  rm -rf "$work"
}
trap cleanup EXIT

mkdir "$tree"
git archive "$REV" | tar -x -C "$tree"
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
gb() { awk -v b="$1" 'BEGIN { printf "%.2f GB", b / 1e9 }'; }
largest_layer() {
  if [ "$ENGINE" = podman ]; then
    podman history --format json "$1" |
      python3 -c 'import json, sys; print(max(int(e.get("size", 0)) for e in json.load(sys.stdin)))'
  else
    docker history --human=false --format '{{.Size}}' "$1" | sort -n | tail -1
  fi
}
# $1: kind, $2: which build. Prints the wall seconds; the build's output goes to its log.
build() {
  local start log="$work/build-$1-$2.log"
  start=$(date +%s)
  (cd "$tree" && IMAGE="$IMAGE" bash tools/image.sh "$1" >"$log" 2>&1) ||
    { tail -20 "$log" >&2; return 1; }
  echo $(($(date +%s) - start))
}

# $1: kind. Prints the table row; the notes go to stderr.
measure() {
  local kind=$1 tag="$IMAGE:$VERSION-$1" first second load0 deps="took deps from the store"
  [ -z "$FRESH_DEPS" ] ||
    echo "# image_table probe $(date +%s%N)" >>"$tree/deploy/docker/requirements.txt"
  load0=$(loadavg)
  first=$(build "$kind" 1)
  grep -q '^Successfully installed .*tensorflow' "$work/build-$kind-1.log" &&
    deps="built deps ($(grep -c '^  Downloading ' "$work/build-$kind-1.log") downloads)"
  echo "# image_table probe $(date +%s%N)" >>"$tree/styletx/colors.py"
  second=$(build "$kind" 2)
  printf '| %s | %s | %s | %s s | %s s |\n' "$kind" \
    "$(gb "$("$ENGINE" image inspect --format '{{.Size}}' "$tag")")" \
    "$(gb "$(largest_layer "$tag")")" "$first" "$second"
  echo "$kind: first build $deps; load average $load0 before, $(loadavg) after" >&2
}

echo "commit $COMMIT; $(date -u +%F), $(uname -m), $(nproc) cores, $("$ENGINE" --version)" >&2
printf '| image | size | largest layer | first build%s | after a source change |\n' \
  "$([ -n "$FRESH_DEPS" ] && echo ' (deps layer built)')"
printf '|---|---:|---:|---:|---:|\n'
for kind in "${KINDS[@]}"; do measure "$kind"; done
