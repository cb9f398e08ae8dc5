#!/usr/bin/env bash
# Runs every `func Fuzz...` target in the module for the given time each.
# Usage: hack/fuzz.sh 10s
#
# Go 1.26's fuzzing coordinator can report a bare "context deadline
# exceeded" failure at the end of a duration -fuzztime with no failing input
# (golang/go#75804, fixed in Go 1.27). A run that fails that way without
# writing a reproducer to testdata/fuzz/ is run once more; any other failure,
# and any reproducer, fails.
set -euo pipefail
fuzztime="${1:-10s}"
cd "$(dirname "$0")/.."
log="$(mktemp)"
trap 'rm -f "${log}"' EXIT

fuzz_one() { # pkg target
  go test -run '^$' -fuzz "^$2\$" -fuzztime "${fuzztime}" "$1" 2>&1 | tee "${log}"
  return "${PIPESTATUS[0]}"
}

grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+\(' . | sort | while read -r f; do
  pkg="./$(dirname "${f#./}")"
  for target in $(grep -oE '^func Fuzz[A-Za-z0-9_]+' "$f" | sed 's/^func //'); do
    echo "fuzz: ${pkg} ${target} for ${fuzztime}"
    corpus="${pkg}/testdata/fuzz/${target}"
    before="$(ls "${corpus}" 2>/dev/null || true)"
    if fuzz_one "${pkg}" "${target}"; then
      continue
    fi
    after="$(ls "${corpus}" 2>/dev/null || true)"
    if [ "${before}" = "${after}" ] && grep -qx $'\tcontext deadline exceeded\|    context deadline exceeded' "${log}"; then
      echo "fuzz: ${target}: Go's end-of-fuzztime race (golang/go#75804), no reproducer written: running it again"
      fuzz_one "${pkg}" "${target}" && continue
    fi
    echo "fuzz: ${target} failed" >&2
    exit 1
  done
done
