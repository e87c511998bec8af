# Build: docker build -t scimgate .
# Run:   docker run -p 8080:8080 -e SCIMGATE_UPSTREAM__URL=http://app:3000 \
#          -e SCIMGATE_UPSTREAM__TOKEN=... scimgate
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY mappings ./mappings
RUN cargo build --release --locked --bin scimgate

# distroless: no shell, no package manager; runs as the unprivileged "nonroot" user.
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /etc/scimgate
COPY --from=build /src/target/release/scimgate /usr/local/bin/scimgate
COPY mappings ./mappings
COPY config.toml ./config.toml
ENV SCIMGATE_LISTEN=0.0.0.0:8080 \
    SCIMGATE_MAPPINGS=/etc/scimgate/mappings/blacksmith
EXPOSE 8080
USER nonroot
ENTRYPOINT ["/usr/local/bin/scimgate"]
CMD ["serve", "--config", "/etc/scimgate/config.toml"]
