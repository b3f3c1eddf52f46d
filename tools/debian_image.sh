# Sourced by tools/base_image.sh and tools/redis_image.sh: make a container image from Debian
# packages alone (bookworm minbase, no docs, man pages or locales), for machines that reach
# Debian's mirror but not a container registry.
#
#   debian_image TAG PACKAGES MESSAGE [mmdebstrap option...] -- [podman import option...]
# PACKAGES is mmdebstrap's comma-separated --include list; the options before `--` go to
# mmdebstrap (e.g. a --customize-hook), those after it to `import` (its --change lines).
debian_image() {
  local tag="$1" packages="$2" message="$3"
  shift 3
  local build=() import=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do build+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  import=("$@")
  local mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  local security="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
  local work
  work="$(mktemp -d)"
  echo "making $tag from Debian packages (mmdebstrap --variant=minbase bookworm: $packages)"
  if mmdebstrap --quiet --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "${build[@]}" bookworm "$work/rootfs.tar" \
    "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
    "deb $security bookworm-security main" &&
    "${ENGINE:-podman}" import --quiet \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' "${import[@]}" --message "$message" \
      "$work/rootfs.tar" "$tag" >/dev/null; then
    rm -rf "$work"
  else
    rm -rf "$work"
    return 1
  fi
  echo "made $tag ($("${ENGINE:-podman}" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}
