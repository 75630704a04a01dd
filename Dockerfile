# syntax=docker/dockerfile:1
# Cairn in one container: build the release binary, then copy it alone onto a minimal base.
#
#   docker build -t cairn .
#   docker run -p 8080:8080 -v cairn-data:/data cairn
#
# The runtime image is distroless `cc` (glibc, libgcc, CA certificates, no shell, no package
# manager) running as the unprivileged `nonroot` user (uid 65532). Everything Cairn keeps —
# database, generated secrets, uploaded files — is under the /data volume.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cairn \
 && install -D -m 0755 target/release/cairn /out/usr/local/bin/cairn \
 && install -d -m 0700 -o 65532 -g 65532 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/cairn /usr/local/bin/cairn
COPY --from=build --chown=65532:65532 /out/data /data
ENV CAIRN_DATA_DIR=/data \
    CAIRN_LISTEN=0.0.0.0:8080 \
    CAIRN_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8080
USER 65532:65532
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/cairn", "health", "--timeout-secs", "4"]
ENTRYPOINT ["/usr/local/bin/cairn"]
CMD ["serve"]
