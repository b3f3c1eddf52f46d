#!/usr/bin/env bash
# `make image` / `make image GPU=1`: build the CPU (or GPU) image with docker where an engine
# runs, else podman. Where the Dockerfile's pinned base cannot be pulled (no registry access), the
# equivalent base is made from Debian packages first (tools/base_image.sh) and used instead.
# A CA bundle named by SSL_CERT_FILE or PIP_CERT reaches pip inside the build as a build secret.
#
#   tools/image.sh cpu|gpu [TARGET]     TARGET: a stage of the Dockerfile to stop at (e.g. build)
# Prints the image reference on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
KIND="${1:?usage: tools/image.sh cpu|gpu [TARGET]}"
TARGET="${2:-}"
DOCKERFILE="deploy/docker/Dockerfile.$KIND"
[ -f "$DOCKERFILE" ] || { echo "no $DOCKERFILE" >&2; exit 2; }
source tools/container_engine.sh

VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' styletx/__init__.py)"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
SOURCE="${IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || echo unknown)}"
IMAGE="${IMAGE:-localhost/styletx}"
TAG="$IMAGE:$VERSION-$KIND${TARGET:+-$TARGET}"

# The Dockerfile's default base, unless BASE_IMAGE says otherwise.
BASE="${BASE_IMAGE:-$(sed -n 's/^ARG BASE_IMAGE=//p' "$DOCKERFILE")}"
if ! "$ENGINE" image inspect "$BASE" >/dev/null 2>&1 && ! "$ENGINE" pull --quiet "$BASE" >/dev/null 2>&1; then
  LOCAL_BASE="${LOCAL_BASE_IMAGE:-localhost/styletx-base:bookworm}"
  echo "note: cannot pull $BASE; using $LOCAL_BASE, made from Debian packages instead"
  if ! "$ENGINE" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    ENGINE="$ENGINE" bash tools/base_image.sh "$LOCAL_BASE"
  fi
  BASE="$LOCAL_BASE"
fi

args=(build --network host -f "$DOCKERFILE" -t "$TAG"
  --build-arg "BASE_IMAGE=$BASE" --build-arg "VERSION=$VERSION"
  --build-arg "REVISION=$REVISION" --build-arg "SOURCE=$SOURCE")
[ -n "$TARGET" ] && args+=(--target "$TARGET")
CERT="${PIP_CERT:-${SSL_CERT_FILE:-}}"
if [ -n "$CERT" ] && [ -s "$CERT" ]; then
  args+=(--secret "id=pip_cert,src=$CERT")
fi
echo "building $TAG from $DOCKERFILE with $ENGINE (base $BASE)"
start=$(date +%s)
"$ENGINE" "${args[@]}" ${IMAGE_BUILD_QUIET:+--quiet} . >&2
# What earlier builds left behind: the images this build replaced (untagged now) and their build
# stages, all made before it started. Each holds the project's files and the weights (~60 MB); a
# CI machine that builds every commit would otherwise fill its disk. The `deps` stage (TensorFlow
# and the rest), which later builds reuse, carries neither label and stays. KEEP_OLD_IMAGES=1
# keeps them all.
[ -n "${KEEP_OLD_IMAGES:-}" ] || for label in "org.opencontainers.image.title=styletx-$KIND" "io.styletx.stage=styletx-$KIND-build"; do
  "$ENGINE" image prune --force --filter "label=$label" --filter "until=$start" >/dev/null ||
    echo "note: could not remove the images earlier builds left ($label)" >&2
done
size="$("$ENGINE" image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.2f GB", $1/1e9}')"
echo "built $TAG in $(($(date +%s) - start)) s ($size)"
echo "$TAG"
