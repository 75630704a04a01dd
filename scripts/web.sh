#!/usr/bin/env bash
# The web app (web/): build it, check that the committed build is what the sources give, and run
# its browser tests against a real Cairn.
#
#   scripts/web.sh build   npm ci + production build into web/dist (committed; the binary embeds it)
#   scripts/web.sh check   build, fail if web/dist differs from the commit; svelte-check; unit tests
#   scripts/web.sh e2e     browser tests (Debian's Chromium, installed with apt-get when missing and
#                          root) against $CAIRN_BIN (default: the debug build); screenshots land in
#                          docs/screenshots/. CAIRN_TEST_LLM_URL (scripts/services.sh) puts the
#                          budget step on the llama.cpp server.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
web="$root/web"

need_node() {
  command -v node >/dev/null && command -v npm >/dev/null || {
    echo "web.sh: Node.js 20+ and npm are needed" >&2
    exit 1
  }
}

install() {
  need_node
  (cd "$web" && npm ci --no-audit --no-fund --loglevel=error)
}

build() {
  install
  (cd "$web" && npm run --silent build)
}

check() {
  build
  if ! git -C "$root" diff --exit-code --stat -- web/dist ||
    [ -n "$(git -C "$root" ls-files --others --exclude-standard -- web/dist)" ]; then
    echo "web.sh: web/dist differs from the commit: run scripts/web.sh build and commit web/dist" >&2
    git -C "$root" status --short -- web/dist >&2
    exit 1
  fi
  (cd "$web" && npm run --silent check && npm run --silent test:unit)
}

chromium_path() {
  for c in "${CHROMIUM_PATH:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    if [ -n "$c" ] && [ -x "$c" ]; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

e2e() {
  if ! chromium_path >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "web.sh: no Chromium found; install Debian's chromium (or set CHROMIUM_PATH)" >&2
      exit 1
    fi
  fi
  export CHROMIUM_PATH="$(chromium_path)"
  export CAIRN_BIN="${CAIRN_BIN:-$HOME/.cache/cairn-target/debug/cairn}"
  if [ ! -x "$CAIRN_BIN" ]; then
    echo "web.sh: no cairn binary at $CAIRN_BIN (set CAIRN_BIN)" >&2
    exit 1
  fi
  [ -d "$web/node_modules" ] || install
  [ -f "$web/dist/index.html" ] || (cd "$web" && npm run --silent build)
  (cd "$web" && npm run --silent test:e2e)
}

case "${1:-}" in
  build) build ;;
  check) check ;;
  e2e) e2e ;;
  *)
    echo "usage: scripts/web.sh build|check|e2e" >&2
    exit 2
    ;;
esac
