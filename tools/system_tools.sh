#!/usr/bin/env bash
# Install the Debian tools the tests use when missing and when we may (root, apt-get):
#   (no argument)   promtool, for the alert-rule tests (skipped without it); node and npm, for
#                   the Node.js interop test (tests/e2e/test_node_interop.py; skipped without them);
#                   redis-server, for the job store's tests (tests/unit/server/store; skipped
#                   without it)
#   --redis         redis-server only (the store tests' fixture runs this when it is missing)
#   --containers    podman, buildah, runc, mmdebstrap and what `podman kube play` needs, for
#                   make image / image-test / deploy-test (these fail without them)
set -u
# Debian's redis-server (Redis 7): the store tests start their own on a free port, so the
# package's system service is neither started nor left running.
install_redis() {
  if command -v redis-server >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: redis-server not installed (needs root + apt-get); the store's Redis tests will be skipped" >&2
    return 0
  fi
  echo "installing redis-server (Debian package redis-server)..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null) \
    || echo "warning: could not install redis-server; the store's Redis tests will be skipped" >&2
  # Where installing started the service anyway, stop it: nothing should hold port 6379.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    systemctl stop redis-server >/dev/null 2>&1 || true
  elif command -v service >/dev/null 2>&1; then
    service redis-server stop >/dev/null 2>&1 || true
  fi
  return 0
}
if [ "${1:-}" = "--redis" ]; then
  install_redis
  exit 0
fi
if [ "${1:-}" = "--containers" ]; then
  missing=""
  for tool in podman buildah runc mmdebstrap catatonit slirp4netns; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/libexec/podman/$tool" ] || missing="$missing $tool"
  done
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then exit 0; fi
  if [ -z "$missing" ]; then exit 0; fi
  if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing$missing; install them (Debian: apt-get install podman buildah runc" \
      "mmdebstrap catatonit slirp4netns uidmap) or run a docker engine" >&2
    exit 2
  fi
  echo "installing the container tools:$missing (Debian packages)..." >&2
  apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      podman buildah runc mmdebstrap catatonit slirp4netns uidmap fuse-overlayfs \
      containernetworking-plugins ca-certificates >/dev/null
  exit $?
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing node and npm (Debian packages nodejs npm)..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null) \
      || echo "warning: could not install nodejs and npm; the Node interop test will be skipped" >&2
  else
    echo "note: node or npm not installed (needs root + apt-get); the Node interop test will be skipped" >&2
  fi
fi
install_redis
if command -v promtool >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: promtool not installed (needs root + apt-get); its test will be skipped" >&2
  exit 0
fi
echo "installing promtool (Debian package prometheus)..." >&2
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
  || echo "warning: could not install prometheus (promtool); its test will be skipped" >&2
exit 0
