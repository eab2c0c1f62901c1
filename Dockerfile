# syntax=docker/dockerfile:1
#
# One image, three static binaries: /consumer, /publisher and /pandapon-sandbox
# (used by deploy/k8s/overlays/dev only). Each Kubernetes Deployment picks its
# command. Runs as distroless's nonroot user (65532) on a read-only root.
#
#   docker build -t ghcr.io/pandabridge/pandabridge:0.1.0 .

# Build on the platform of the builder, for the platform of the image.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# CGO off: static binaries that run on distroless/static (no libc).
# -tags=nodev leaves the consumer's -dev mode (embedded NATS server and
# sandbox) out: a third of the binary and about 4 MB of resident memory.
# cmd/pandabench builds the consumer it measures with these same flags.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags="-s -w" -tags=nodev -o /out/ \
        ./cmd/consumer ./cmd/publisher ./cmd/pandapon-sandbox

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/consumer /consumer
COPY --from=build /out/publisher /publisher
COPY --from=build /out/pandapon-sandbox /pandapon-sandbox
USER 65532:65532
# The consumer's /healthz, /readyz and /metrics; the publisher's future ingest.
EXPOSE 8080 8081
ENTRYPOINT ["/consumer"]
