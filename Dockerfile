# syntax=docker/dockerfile:1
# keel — multi-stage image. Build: docker build -t keel .
# Run:  docker run -p 8080:8080 -e JWT_SECRET=... -v keel-data:/var/lib/keel/data keel
# The runtime stage carries keel and exactly the shared libraries it loads
# (tests/deploy/test_deploy.py checks the list against `ldd build/keel` and
# the libraries keel opens at run time: libpq5, libjwt0).

FROM debian:12-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gcc make pkg-config libc6-dev libuv1-dev libjansson-dev libsqlite3-dev libpq-dev \
      zlib1g-dev libsodium-dev libjwt-dev libhiredis-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY include include
COPY src src
COPY migrations migrations
COPY scripts scripts
COPY web web
RUN make -j"$(nproc)" build/keel && strip build/keel

FROM debian:12-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libuv1 libjansson4 libsqlite3-0 zlib1g libsodium23 libhiredis0.14 libcurl4 \
      libpq5 libjwt0 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/keel --no-create-home \
      --shell /usr/sbin/nologin keel \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/keel /var/lib/keel/data
COPY --from=build /src/build/keel /usr/local/bin/keel

# Read-only root file system friendly: keel writes only to the data volume
# (the SQLite database, uploads) and logs to stdout.
ENV HOST=0.0.0.0 \
    PORT=8080 \
    KEEL_ENV=production \
    LOG_FORMAT=json \
    DATABASE_URL=sqlite:/var/lib/keel/data/keel.db \
    UPLOAD_DIR=/var/lib/keel/data/uploads
WORKDIR /var/lib/keel
VOLUME ["/var/lib/keel/data"]
USER 10001:10001
EXPOSE 8080
# keel drains on SIGTERM (SHUTDOWN_GRACE, 30 s by default): give it longer,
# e.g. docker stop -t 40, or stop_grace_period in compose.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/keel", "healthcheck", "/health/live"]
ENTRYPOINT ["/usr/local/bin/keel"]
CMD ["serve"]
