#!/usr/bin/env bash
# Runs every `func Fuzz...` target in the module for the given time each.
# Usage: hack/fuzz.sh 10s
set -euo pipefail
fuzztime="${1:-10s}"
cd "$(dirname "$0")/.."
grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+\(' . | sort | while read -r f; do
  pkg="./$(dirname "${f#./}")"
  for target in $(grep -oE '^func Fuzz[A-Za-z0-9_]+' "$f" | sed 's/^func //'); do
    echo "fuzz: ${pkg} ${target} for ${fuzztime}"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "${fuzztime}" "${pkg}"
  done
done
