#!/usr/bin/env bash
# The packaging specs (npm run test:packaging) once per Node major, each run's apps, npm and tools
# under that Node (PACKAGING_NODE, fetched once from the npm package `node` into npm's cache).
# Jest itself runs on the machine's Node. Every major runs even if one fails; prints a time per major.
#   bash scripts/packaging-on-node.sh 22 24 26
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  echo "usage: bash scripts/packaging-on-node.sh MAJOR [MAJOR…]   e.g. 22 24 26" >&2
  exit 2
fi

summary=()
failed=0
for major in "$@"; do
  started=$SECONDS
  echo "== packaging on Node $major =="
  # Fetch first, so a registry problem is reported as such and not as a failing spec.
  if ! version=$(cd /tmp && npm exec --yes --package "node@$major" -- node -v); then
    summary+=("Node $major: could not get node@$major from the npm registry")
    failed=1
    continue
  fi
  if PACKAGING_NODE=$major npm run test:packaging; then
    result=passed
  else
    result=FAILED
    failed=1
  fi
  summary+=("Node $major ($version): $result in $((SECONDS - started)) s")
done

echo "== packaging per Node =="
printf '%s\n' "${summary[@]}"
exit $failed
