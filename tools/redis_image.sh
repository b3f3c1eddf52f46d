#!/usr/bin/env bash
# Make the fleet's Redis image from Debian packages alone, for machines that can reach Debian's
# mirror but not a container registry (`make deploy-test` uses it where the StatefulSet's
# docker.io/library/redis:7.2.11 cannot be pulled): Debian bookworm (minbase) with its Redis 7
# (redis-server, redis-cli), tagged $1 (default localhost/styletx-redis:bookworm).
# Equivalent to the official image for what deploy/k8s/components/fleet/redis runs, not
# identical: Debian's Redis 7.0 instead of 7.2 (the store needs 7.0), in /usr/bin; the same user
# `redis` with uid and gid 999 owning /data, the working directory; `sh` and `grep` for the
# readiness probe; no entrypoint script (the manifest runs redis-server itself).
set -euo pipefail
TAG="${1:-localhost/styletx-redis:bookworm}"
PACKAGES=redis-server,redis-tools
source "$(dirname "$0")/debian_image.sh"
# The package makes a system user `redis` with whatever uid is free; the manifest runs as 999,
# the official image's: renumber it and give it /data. ("$1" is the root mmdebstrap hands the
# hook, left for the hook's shell to expand.)
debian_image "$TAG" "$PACKAGES" \
  "Debian bookworm minbase + $PACKAGES, user redis 999:999 (tools/redis_image.sh)" \
  --customize-hook='chroot "$1" sh -ec "
    groupmod -g 999 redis
    usermod -u 999 -g 999 redis
    chown -R redis:redis /var/lib/redis /var/log/redis
    mkdir -p /data
    chown redis:redis /data
    chmod 0755 /data"' \
  -- --change 'VOLUME /data' --change 'WORKDIR /data' --change 'EXPOSE 6379' \
  --change 'CMD ["redis-server"]'
echo "$TAG"
