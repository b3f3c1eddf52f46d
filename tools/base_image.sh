#!/usr/bin/env bash
# Make the images' base from Debian packages alone, for machines that can reach Debian's mirror
# but not a container registry: Debian bookworm (minbase) with its Python 3.11, tagged $1.
# Equivalent to python:3.11-slim-bookworm for what the Dockerfiles need (python, venv, pip's CA
# certificates, groupadd/useradd, libgomp for TensorFlow), not identical: Debian's python3 is
# 3.11.2 in /usr/bin instead of python.org's 3.11.x in /usr/local/bin.
set -euo pipefail
TAG="${1:?usage: base_image.sh TAG}"
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,netbase,tzdata,passwd,libgomp1
source "$(dirname "$0")/debian_image.sh"
debian_image "$TAG" "$PACKAGES" "Debian bookworm minbase + $PACKAGES (tools/base_image.sh)" \
  -- --change 'CMD ["python3"]'
