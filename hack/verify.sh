#!/usr/bin/env bash
# Fails when generated or formatted files differ from what the tools produce.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
unformatted="$(gofmt -l $(git ls-files '*.go'))"
if [ -n "${unformatted}" ]; then echo "verify: gofmt needed: ${unformatted}"; fail=1; fi
go mod tidy
if [ -f hack/generate.sh ]; then hack/generate.sh; fi
if ! git diff --exit-code --stat; then echo "verify: generated files or go.mod drifted; run the generators and commit"; fail=1; fi
go vet ./...
exit "${fail}"
