# syntax=docker/dockerfile:1.7
# The operator image, for people who build with Docker (BuildKit). It gives
# the layout `make image` (image/build) builds without a daemon: a static musl
# binary at /ics-operator on an empty base, /etc/passwd and /etc/group naming
# the nonroot user 65532, Mozilla's CA bundle (certifi, pinned by hash) at
# /etc/ssl/certs/ca-certificates.crt, user 65532:65532, entrypoint
# ["/ics-operator"], cmd ["run"], and the same OCI labels.
#
# Untested here: the project's build machines have no container runtime, so
# CI checks image/build's output (image/check), not this file. Keep the two in
# step. Pin the base images by digest where you build.
#
#   docker build -t ghcr.io/carerecord/ics-operator:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg CREATED=$(date -u -d @$(git log -1 --format=%ct) +%Y-%m-%dT%H:%M:%SZ) .
#
# For a reproducible image from Docker, also pass
# --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) and
# --output type=image,rewrite-timestamp=true (BuildKit 0.13+); the digest will
# still differ from image/build's (another compressor, other config fields).

FROM rust:1.95-bookworm AS build
# musl-gcc compiles ring's and psm's C for the musl target.
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# The same flags as image/build: the checkout and Cargo's home are remapped
# out of the binary.
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="--remap-path-prefix=/src=/src --remap-path-prefix=/usr/local/cargo=/cargo"
RUN cargo build --locked --release --target x86_64-unknown-linux-musl -p ics-operator \
 && cp target/x86_64-unknown-linux-musl/release/ics-operator /ics-operator

FROM python:3.13-slim AS certs
# The CA bundle, pinned as image/build pins it (version and wheel hash).
RUN echo "certifi==2026.5.20 --hash=sha256:3c52e209ba0a4ad7aebe60436a4ab349c39e1e602e8c134221e546902ad25897" > /requirements.txt \
 && pip download -q --no-deps --only-binary :all: --require-hashes -r /requirements.txt -d /wheel \
 && python -c 'import glob, zipfile; open("/cacert.pem", "wb").write(zipfile.ZipFile(glob.glob("/wheel/*.whl")[0]).read("certifi/cacert.pem"))'

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=https://github.com/carerecord/ics-operator
COPY --chmod=0644 image/rootfs/etc/passwd image/rootfs/etc/group /etc/
COPY --from=certs --chmod=0644 /cacert.pem /etc/ssl/certs/ca-certificates.crt
COPY --from=build --chmod=0755 /ics-operator /ics-operator
USER 65532:65532
ENTRYPOINT ["/ics-operator"]
CMD ["run"]
LABEL org.opencontainers.image.title="ics-operator" \
      org.opencontainers.image.description="Onboards Integrated Care Systems onto a shared care record platform" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
