# The daemon image: ghcr.io/backout/backout:0.1.0 (the name deploy/ and docs/operations.md use).
#   docker build -t ghcr.io/backout/backout:0.1.0 .
# Only the daemon is built (`--no-default-features`: no demo, simulator or benchmark harness;
# `backout run`, `validate`, `explain`, `rollback`, `backtest` and `status` are all in it).
# The binary links jemalloc (tikv-jemalloc-sys builds it from source: `make` and `cc`, both in
# the rust image; docs/performance.md "Third pass: memory").

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked --no-default-features --bin backout \
    && cp target/release/backout /backout

# Distroless: glibc and CA certificates (rustls uses its own roots, the runtime needs libc), no
# shell, no package manager; the nonroot variant runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /backout /usr/local/bin/backout
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/backout"]
CMD ["run", "--config", "/etc/backout/backout.toml"]
