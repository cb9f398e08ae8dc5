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
# pkg/alpc is a library applications import: it must build (and fail at run
# time with alpc.ErrUnsupported) on developers' macOS and Windows machines.
for platform in darwin/amd64 darwin/arm64 windows/amd64 windows/arm64; do
  if ! CGO_ENABLED=0 GOOS="${platform%/*}" GOARCH="${platform#*/}" go vet ./pkg/alpc/...; then
    echo "verify: pkg/alpc does not build for ${platform}"; fail=1
  fi
done
exit "${fail}"
