#!/usr/bin/env bash
# Build the web dashboard (web/dist) when npm is installed and the build is missing or older than its
# sources. Never fatal: windflow's API works without the dashboard.
set -uo pipefail
web="$(cd "$(dirname "$0")/.." && pwd)"
index="$web/dist/index.html"
if ! command -v npm >/dev/null 2>&1; then
  if [ ! -f "$index" ]; then
    echo "note: the web dashboard is not built and npm is not installed; the API works without it." >&2
    echo "      To get it: install Node.js 20+ (with npm), then run: cd web && npm ci && npm run build" >&2
  fi
  exit 0
fi
stale=""
if [ ! -f "$index" ]; then
  stale="missing"
elif [ -n "$(find "$web/src" "$web/index.html" "$web/package-lock.json" "$web/vite.config.ts" -newer "$index" -print -quit 2>/dev/null)" ]; then
  stale="out of date"
fi
[ -z "$stale" ] && exit 0
echo "building the web dashboard ($stale): npm ci && npm run build"
(
  cd "$web" || exit 1
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error || exit 1
  fi
  npm run build --silent >/dev/null || exit 1
) || echo "warning: building the web dashboard failed; the API still works (see: cd web && npm run build)" >&2
exit 0
