#!/usr/bin/env bash
# Install the Debian tools some tests use (promtool) when missing and when we may (root, apt).
set -u
if command -v promtool >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: promtool not installed (needs root + apt-get); its test will be skipped" >&2
  exit 0
fi
echo "installing promtool (Debian package prometheus)..." >&2
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
  || echo "warning: could not install prometheus (promtool); its test will be skipped" >&2
exit 0
