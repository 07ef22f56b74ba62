# syntax=docker/dockerfile:1
# Build: docker build -t tally .
# Run:   docker run -d --name tally -p 127.0.0.1:8000:8000 -v tally-data:/data tally
#        docker logs tally                       # the first-run setup token
#        docker exec tally tally site add example.com
#
# Two stages: the Rust toolchain builds the binary; the image that runs holds
# only that binary on a minimal base (glibc, no shell, no package manager) as
# a non-root user. Everything Tally serves is inside the binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build artifacts between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tally \
    && cp target/release/tally /usr/local/bin/tally \
    && mkdir -p /data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/tally /usr/local/bin/tally
# The volume's mount point, owned by the image's non-root user (65532), so a
# new named volume starts out writable by it.
COPY --from=build --chown=65532:65532 /data /data
USER 65532:65532
ENV TALLY_SERVER_LISTEN=0.0.0.0:8000 \
    TALLY_STORAGE_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
# No curl in the image: the binary checks its own /api/health.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/tally", "health"]
ENTRYPOINT ["/usr/local/bin/tally"]
CMD ["serve"]
