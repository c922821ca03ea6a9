#!/usr/bin/env bash
# Build the web dashboard (web/dist) when npm is installed and the build is missing or older than its
# sources, installing web/node_modules first (npm ci) when missing or older than package-lock.json.
# Never fatal by default: windflow's API works without the dashboard.
#   --strict  fail (exit 1) when npm is missing or installing/building fails (scripts/test-web)
#   --deps    only install web/node_modules; do not build
set -uo pipefail
web="$(cd "$(dirname "$0")/.." && pwd)"
index="$web/dist/index.html"
strict="" deps_only=""
for arg in "$@"; do
  case "$arg" in
    --strict) strict=1 ;;
    --deps) deps_only=1 ;;
    *) echo "usage: $0 [--strict] [--deps]" >&2; exit 2 ;;
  esac
done
if ! command -v npm >/dev/null 2>&1; then
  if [ -n "$strict" ]; then
    echo "npm is not installed: the web dashboard needs Node.js 20+ with npm" >&2
    exit 1
  fi
  if [ ! -f "$index" ]; then
    echo "note: the web dashboard is not built and npm is not installed; the API works without it." >&2
    echo "      To get it: install Node.js 20+ (with npm), then run: cd web && npm ci && npm run build" >&2
  fi
  exit 0
fi
install_deps() {
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
}
cd "$web" || exit 1
if [ -n "$deps_only" ]; then
  install_deps
  exit
fi
stale=""
if [ ! -f "$index" ]; then
  stale="missing"
elif [ -n "$(find "$web/src" "$web/index.html" "$web/package-lock.json" "$web/vite.config.ts" -newer "$index" -print -quit 2>/dev/null)" ]; then
  stale="out of date"
fi
[ -z "$stale" ] && exit 0
echo "building the web dashboard ($stale): npm ci && npm run build"
if install_deps && npm run build --silent >/dev/null; then
  exit 0
fi
[ -n "$strict" ] && exit 1
echo "warning: building the web dashboard failed; the API still works (see: cd web && npm run build)" >&2
exit 0
