# The keyserver in a container: built in one stage, run as a non-root user in another, the
# data dir a volume.
#
# Not built on the development machine (it has no Docker daemon); `.ci/run` checks the
# systemd unit and the compose file's syntax, not this file.
#
#   docker build -t keyserver .
#   docker run -v keyserver:/var/lib/keyserver -p 7443:7443/udp -p 7443:7443/tcp keyserver
#
# The key-encryption key: with the default file provider it is made next to the data dir,
# in the same volume (/var/lib/keyserver/data.setup.key) — fine for a laptop, not for
# production. In production use a KMS key (KEYSERVER_KMS_KEY_ID, credentials from the
# standard AWS environment) or mount the key file from a secret store (KEYSERVER_SETUP_KEY_FILE).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin keyserver \
 && install -m 0755 target/release/keyserver /usr/local/bin/keyserver

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/keyserver --create-home keyserver
COPY --from=build /usr/local/bin/keyserver /usr/local/bin/keyserver
USER keyserver
VOLUME ["/var/lib/keyserver"]
ENV KEYSERVER_DATA_DIR=/var/lib/keyserver/data \
    KEYSERVER_LISTEN=0.0.0.0:7443 \
    KEYSERVER_LOG_FORMAT=json
EXPOSE 7443/udp 7443/tcp 9443/tcp
ENTRYPOINT ["/usr/local/bin/keyserver"]
CMD ["serve"]
