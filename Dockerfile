# syntax=docker/dockerfile:1
#
# kalpc images for users with Docker (BuildKit) or another Dockerfile
# builder. One target per command, each a static binary (CGO_ENABLED=0) on
# distroless static, running as the non-root UID 65532:
#
#   docker build --target operator -t ghcr.io/kalpc/kalpc-operator:dev .
#   docker build --target sidecar  -t ghcr.io/kalpc/kalpc-sidecar:dev .
#   docker build --target nodeprep -t ghcr.io/kalpc/kalpc-nodeprep:dev .
#
# `make docker-build` builds all three. Without a container engine,
# `make image` builds the same images from the same binaries with
# hack/image (go-containerregistry) into _out/images/*.tar.
#
# Reproducible: -trimpath, no build id, no VCS stamp, and with
# SOURCE_DATE_EPOCH BuildKit sets every timestamp to it. Pin the base images
# by digest in release builds (GO_IMAGE, BASE_IMAGE).

ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY internal/ internal/
COPY pkg/ pkg/
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    for c in operator sidecar nodeprep; do \
      GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w -buildid=" \
        -o /out/kalpc-$c ./cmd/$c || exit 1; \
    done

FROM ${BASE_IMAGE} AS base
ARG VERSION=dev
ARG REVISION=
LABEL org.opencontainers.image.source="https://github.com/kalpc/kalpc" \
      org.opencontainers.image.vendor="kalpc" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
USER 65532:65532

FROM base AS operator
LABEL org.opencontainers.image.title="kalpc-operator" \
      org.opencontainers.image.description="kalpc operator"
COPY --from=build /out/kalpc-operator /usr/local/bin/kalpc-operator
ENTRYPOINT ["/usr/local/bin/kalpc-operator"]

FROM base AS sidecar
LABEL org.opencontainers.image.title="kalpc-sidecar" \
      org.opencontainers.image.description="kalpc sidecar"
COPY --from=build /out/kalpc-sidecar /usr/local/bin/kalpc-sidecar
ENTRYPOINT ["/usr/local/bin/kalpc-sidecar"]

# The node preparation DaemonSet runs this image as UID 0 with CAP_CHOWN
# only (the chart sets it); the image itself defaults to non-root.
FROM base AS nodeprep
LABEL org.opencontainers.image.title="kalpc-nodeprep" \
      org.opencontainers.image.description="kalpc node preparation"
COPY --from=build /out/kalpc-nodeprep /usr/local/bin/kalpc-nodeprep
ENTRYPOINT ["/usr/local/bin/kalpc-nodeprep"]
