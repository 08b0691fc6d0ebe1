# syntax=docker/dockerfile:1
# hyperflight: the Flight server, the Airbyte source and the load generator, built from the cargo
# workspace with the Rust toolchain (stage `builder`) and shipped in a slim Debian runtime that holds
# just the three binaries (stage `runtime`).
#   docker build -t hyperflight:local .
#   docker run --rm -p 50051:50051 -e HYPERFLIGHT_DATABASE_URL=postgres://user:pw@db:5432/tsdb hyperflight:local
#   docker run --rm -i --entrypoint hyperflight-airbyte hyperflight:local spec
# Settings come from HYPERFLIGHT_* variables or flags after `serve` (README, Settings).

# Builder and runtime share Debian bookworm, so the binaries find the glibc they were linked against.
# 1.95 is the toolchain the project is developed with; the locked dependencies need at least 1.89.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /build
# Everything cargo reads to build the workspace: the root manifest and lock file, and crates/ (each
# member's manifest and sources, the ticket crate's build script and the .proto it compiles with the
# vendored protoc, and the benches, tests and fixtures the manifests declare).
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# Cache mounts keep the registry and target dir across builds; the binaries are copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --workspace --bins \
    && mkdir -p /out \
    && cp target/release/hyperflight target/release/hyperflight-airbyte target/release/hyperflight-loadtest /out/

FROM debian:bookworm-slim AS runtime
# ca-certificates for TLS to PostgreSQL or from clients; an unprivileged user to run as. Not pinned:
# bookworm's security updates replace the exact version, which would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 hyperflight \
    && useradd --system --uid 10001 --gid hyperflight --no-create-home --shell /usr/sbin/nologin hyperflight
COPY --from=builder /out/hyperflight /out/hyperflight-airbyte /out/hyperflight-loadtest /usr/local/bin/
USER 10001:10001
# Inside a container the server must listen on all interfaces to be reachable at all.
ENV HYPERFLIGHT_LISTEN=0.0.0.0:50051 \
    HYPERFLIGHT_METRICS_LISTEN=0.0.0.0:9469
EXPOSE 50051 9469
# `hyperflight health`: exit 0 when the server answers DoAction health and reaches its database; it
# gives up after 4 s, within Docker's 5 s, so a hung probe reports itself instead of being killed.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["hyperflight", "health", "--url", "grpc://127.0.0.1:50051", "--timeout-seconds", "4"]
ENTRYPOINT ["hyperflight"]
CMD ["serve"]
