# Stand-in for rust:<version>-slim-bookworm, built by scripts/compose-test.sh where no image can be
# pulled. Like the official image: Debian bookworm-slim with gcc and libc6-dev (the linker cargo
# calls), the toolchain under RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo and cargo,
# rustc and rustdoc on PATH. The toolchain is the host's rustup toolchain of the same version
# (minimal: no docs, no rust-src), which the script copies into the build context as `toolchain/`,
# instead of one rustup-init downloads; there is no rustup binary in the image. The host's local CA
# certificates (`local-ca-certificates/`, from /usr/local/share/ca-certificates) are trusted too, so
# cargo reaches crates.io through a TLS-intercepting proxy as the host does.
FROM debian:bookworm-slim
ARG RUST_TOOLCHAIN
COPY local-ca-certificates/ /usr/local/share/ca-certificates/
# hadolint ignore=DL3008
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev; \
    rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUST_VERSION=${RUST_TOOLCHAIN}
COPY toolchain /usr/local/rustup/toolchains/${RUST_TOOLCHAIN}-x86_64-unknown-linux-gnu
RUN set -eux; \
    mkdir -p /usr/local/cargo/bin; \
    for tool in cargo rustc rustdoc; do \
        ln -s "/usr/local/rustup/toolchains/${RUST_TOOLCHAIN}-x86_64-unknown-linux-gnu/bin/$tool" /usr/local/cargo/bin/; \
    done; \
    chmod -R a+w /usr/local/cargo; \
    cargo --version; \
    rustc --version | grep -F "rustc ${RUST_TOOLCHAIN} "
