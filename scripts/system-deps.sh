#!/usr/bin/env bash
# Installs the Debian packages that some tests need, only when they are missing.
set -euo pipefail
need=()
# Grows as tests that need a tool land (tool:package pairs).
for pair in ${ACD_SYSTEM_DEPS:-haproxy:haproxy promtool:prometheus chromium:chromium keepalived:keepalived systemd-analyze:systemd}; do
  tool=${pair%%:*}; package=${pair##*:}
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || need+=("$package")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "system-deps: missing ${need[*]} and no root to install them; tests that need them will fail in CI" >&2
  exit 0
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "system-deps: installing ${need[*]}"
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
