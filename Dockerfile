# Build: docker build -t tally .
# Run:   docker run -p 8000:8000 -v tally-data:/data tally
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tally

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data tally \
    && mkdir -p /data && chown tally /data
COPY --from=build /src/target/release/tally /usr/local/bin/tally
USER tally
ENV TALLY_SERVER_LISTEN=0.0.0.0:8000 \
    TALLY_STORAGE_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/tally"]
CMD ["serve"]
