# scimgate container image: the release binary on distroless (glibc, no shell, no package
# manager), running as non-root. Config and mappings are files under /etc/scimgate; mount
# your own over them.
#
# Build: docker build -t scimgate .
# Run:   docker run -p 8080:8080 -p 127.0.0.1:9090:9090 \
#          -e SCIMGATE_UPSTREAM__URL=http://app:3000 -e SCIMGATE_UPSTREAM__TOKEN=... \
#          -v "$PWD/config.toml:/etc/scimgate/config.toml:ro" \
#          -v "$PWD/mappings/blacksmith:/etc/scimgate/mappings:ro" \
#          scimgate
#
# tests/dockerfile.rs keeps this file honest without a Docker engine: it stages exactly
# what the COPY lines copy, checks the cargo command against that tree, and runs the
# HEALTHCHECK command against a gateway started the way CMD starts it.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The build flags (tokio's scheduler switch, see there).
COPY .cargo ./.cargo
COPY src ./src
COPY mappings ./mappings
# Cargo.toml declares the benchmark target; cargo refuses a manifest whose targets are missing.
COPY benches ./benches
RUN cargo build --release --locked --bin scimgate

# distroless: no shell, no package manager; "nonroot" is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/scimgate /usr/local/bin/scimgate
WORKDIR /etc/scimgate
COPY config.toml ./config.toml
# The live-reload poller watches this directory: a mounted ConfigMap works as is.
COPY mappings/blacksmith ./mappings
ENV SCIMGATE_LISTEN=0.0.0.0:8080 \
    SCIMGATE_ADMIN_LISTEN=0.0.0.0:9090 \
    SCIMGATE_MAPPINGS=/etc/scimgate/mappings \
    SCIMGATE_LOG_FORMAT=json
# 8080: SCIM, /healthz, /readyz. 9090: /metrics (unauthenticated: do not publish it).
EXPOSE 8080 9090
USER nonroot
# `scimgate health` GETs /healthz on the configured listener: no curl needed.
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/scimgate", "health"]
ENTRYPOINT ["/usr/local/bin/scimgate"]
CMD ["serve", "--config", "/etc/scimgate/config.toml"]
