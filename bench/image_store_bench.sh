#!/usr/bin/env bash
# What one commit costs a machine that builds the CPU image on every CI run: build the image,
# change one source file, build again, and measure how much the image store grew and how long the
# second build took. Side by side in one run, for this tree and for the tree at BASELINE (a git
# revision; default baeb8a2, the last one before the `deps` stage), each built by its own
# tools/image.sh. Needs podman or docker, as `make image` does; removes what it built at the end.
#
#   bench/image_store_bench.sh [BASELINE]
set -euo pipefail
cd "$(dirname "$0")/.."
BASELINE="${1:-baeb8a2}"
source tools/container_engine.sh
[ "$ENGINE" = podman ] || { echo "measures podman's store; ENGINE=$ENGINE" >&2; exit 2; }
STORE="$(podman info --format '{{.Store.GraphRoot}}')"

work="$(mktemp -d)"
before_ids="$work/ids-before"
podman images -a -q --no-trunc | sort -u >"$before_ids"
cleanup() {
  podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/styletx-bench-' |
    xargs -r podman rmi >/dev/null 2>&1 || true
  # Every image this run made (tags, build stages, intermediates), newest first, until none goes.
  podman images -a -q --no-trunc | sort -u | comm -13 "$before_ids" - >"$work/ids-new" || true
  for _ in 1 2 3 4; do
    [ -s "$work/ids-new" ] || break
    xargs -r podman rmi --force <"$work/ids-new" >/dev/null 2>&1 || true
    podman images -a -q --no-trunc | sort -u | comm -13 "$before_ids" - >"$work/ids-new" || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

store_mb() { du -sm "$STORE/overlay" | cut -f1; }

# $1: name, $2: tree. Prints "name growth_mb seconds". KEEP_OLD_IMAGES=1 in the environment
# turns this tree's clean-up of earlier builds off.
measure() {
  local name=$1 tree=$2 grown start took before
  (cd "$tree" && IMAGE="localhost/styletx-bench-$name" bash tools/image.sh cpu >/dev/null 2>&1)
  echo "# bench probe $(date +%s%N)" >>"$tree/styletx/colors.py"
  before=$(store_mb)
  start=$(date +%s)
  (cd "$tree" && IMAGE="localhost/styletx-bench-$name" bash tools/image.sh cpu >/dev/null 2>&1)
  took=$(($(date +%s) - start))
  grown=$(($(store_mb) - before))
  echo "$name $grown $took"
}

mkdir "$work/current" "$work/baseline"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work/current"
git archive "$BASELINE" | tar -x -C "$work/baseline"
echo "image store: $STORE ($(store_mb) MB before)"
# This tree first: its builds remove the images earlier builds of the same title left, which
# would otherwise include the baseline's.
read -r _ cur_mb cur_s < <(measure current "$work/current")
cp -r "$work/current" "$work/kept"
read -r _ kept_mb kept_s < <(KEEP_OLD_IMAGES=1 measure kept "$work/kept")
read -r _ base_mb base_s < <(measure baseline "$work/baseline")
printf '\n| tree | store growth per commit | build after a source change |\n|---|---:|---:|\n'
printf '| baseline (%s) | %s MB | %s s |\n' "$BASELINE" "$base_mb" "$base_s"
printf '| this tree, earlier builds kept (new layers only) | %s MB | %s s |\n' "$kept_mb" "$kept_s"
printf '| this tree | %s MB | %s s |\n' "$cur_mb" "$cur_s"
awk -v a="$kept_mb" -v b="$base_mb" -v s="$cur_s" -v t="$base_s" 'BEGIN {
  printf "\nratios (this tree / baseline): new layers per commit %.3fx, build time %.2fx\n",
    (b > 0 ? a / b : 0), (t > 0 ? s / t : 0) }'
