#!/usr/bin/env bash
# Installs what the browser tests (tests/browser) need, once per machine:
#   - Chromium from Debian's packages (/usr/bin/chromium);
#   - playwright-core from the npm registry, into a cache folder outside the repository
#     (playwright-core never downloads a browser; the tests drive /usr/bin/chromium).
# Idempotent: a second run installs nothing.  Prints the playwright-core folder.
set -euo pipefail

PLAYWRIGHT_CORE_VERSION="1.65.1"
CACHE="${SEQLEARN_BROWSER_CACHE:-$HOME/.cache/seqlearn-browser}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

if [ ! -x /usr/bin/chromium ]; then
  echo "browser_setup: installing Debian chromium" >&2
  apt_install chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "browser_setup: installing Debian nodejs and npm" >&2
  apt_install nodejs npm
fi

MODULE="$CACHE/node_modules/playwright-core"
if ! grep -qs "\"version\": \"$PLAYWRIGHT_CORE_VERSION\"" "$MODULE/package.json"; then
  echo "browser_setup: installing playwright-core@$PLAYWRIGHT_CORE_VERSION into $CACHE" >&2
  mkdir -p "$CACHE"
  npm install --prefix "$CACHE" --no-audit --no-fund --loglevel=error "playwright-core@$PLAYWRIGHT_CORE_VERSION" >&2
fi
echo "$MODULE"
