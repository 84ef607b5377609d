#!/usr/bin/env bash
# Switch node_modules to one NestJS major for the test suite, without touching package.json or the lock.
#   bash scripts/use-nest.sh 12   # the default set (package-lock.json): npm ci
#   bash scripts/use-nest.sh 11   # the Nest 11 set, installed over it with --no-save
# Nest 11's stock NATS transport (used by the interop tests) loads the 'nats' 2.x client; Nest 12's
# loads '@nats-io/transport-node', which the library depends on anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  12)
    npm ci --no-audit --no-fund
    ;;
  11)
    npm install --no-save --no-audit --no-fund \
      @nestjs/common@^11.1.0 @nestjs/core@^11.1.0 @nestjs/microservices@^11.1.0 \
      @nestjs/platform-express@^11.1.0 @nestjs/testing@^11.1.0 @nestjs/terminus@^11.0.0 \
      nats@^2.29.3
    ;;
  *)
    echo "usage: bash scripts/use-nest.sh 11|12" >&2
    exit 2
    ;;
esac
node -e "const v = (p) => require('./node_modules/' + p + '/package.json').version; console.log('NestJS', v('@nestjs/core'), '/ @nestjs/microservices', v('@nestjs/microservices'))"
