#!/usr/bin/env bash
# The ecosystem's own checks of what we publish (npm run check:package); each packs the work tree,
# so each runs the prepare build. Fails on their errors; publint's warnings and suggestions are printed.
set -euo pipefail
cd "$(dirname "$0")/.."

step() {
  local name=$1
  shift
  local started=$SECONDS
  echo "== check:package: $name =="
  "$@"
  echo "== check:package: $name ok in $((SECONDS - started)) s =="
}

# What npm would publish, and that npm accepts the manifest (no login needed for --dry-run).
step "npm publish --dry-run" npm publish --dry-run
# exports, files, main/types against the packed files; exits non-zero on errors only.
step "publint" npx --no-install publint run --pack npm
# Types as TypeScript resolves them from ESM and CJS apps (node16/nodenext) and bundlers. The node16
# profile leaves out node10 resolution, which TypeScript 6 reports as deprecated and 7 removes:
# there `nestjs-nats-eventbus/microservices` (an "exports" subpath) cannot resolve, by design.
step "attw (@arethetypeswrong/cli)" npx --no-install attw --pack . --profile node16
