# Sourced by the image scripts: pick the container engine and, for podman, its settings.
# docker where its engine answers, else podman (installed by tools/system_tools.sh --containers
# when missing, as root with apt-get). Sets ENGINE.
if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    ENGINE=docker
  elif command -v podman >/dev/null 2>&1; then
    ENGINE=podman
  else
    echo "error: neither a running docker engine nor podman found;" \
      "install podman (Debian: apt-get install podman runc) or run tools/system_tools.sh --containers" >&2
    exit 2
  fi
fi
if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ]; then
  CONTAINERS_CONF="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/deploy/podman/containers.conf"
  export CONTAINERS_CONF
fi
export ENGINE
