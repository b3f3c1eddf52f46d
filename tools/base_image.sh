#!/usr/bin/env bash
# Make the images' base from Debian packages alone, for machines that can reach Debian's mirror
# but not a container registry: Debian bookworm (minbase) with its Python 3.11, tagged $1.
# Equivalent to python:3.11-slim-bookworm for what the Dockerfiles need (python, venv, pip's CA
# certificates, groupadd/useradd, libgomp for TensorFlow), not identical: Debian's python3 is
# 3.11.2 in /usr/bin instead of python.org's 3.11.x in /usr/local/bin.
set -euo pipefail
TAG="${1:?usage: base_image.sh TAG}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,netbase,tzdata,passwd,libgomp1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "making $TAG from Debian packages (mmdebstrap --variant=minbase bookworm: $PACKAGES)"
mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  bookworm "$work/rootfs.tar" \
  "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
  "deb $SECURITY bookworm-security main"
"${ENGINE:-podman}" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "Debian bookworm minbase + $PACKAGES (tools/base_image.sh)" \
  "$work/rootfs.tar" "$TAG" >/dev/null
echo "made $TAG ($("${ENGINE:-podman}" image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
