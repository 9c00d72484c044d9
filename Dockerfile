# The controller's image: built from this repository with the same command CI runs
# (`cargo build --release --locked`, see .ci/run), on Debian bookworm, and run as a non-root user on
# bookworm-slim with curl, which the rollback runbook uses through `kubectl exec ... curl`.
#
#   docker build -t ghcr.io/vpsie/vpsie-autoscaler:0.1.0 .
#
# tests/dockerfile.rs checks this file (user, copied path, entrypoint, pinned base); no container engine
# runs on the project's machines, so the image itself is not built by CI (see README, "Container image").

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
COPY examples ./examples
RUN cargo build --release --locked --bin vpsie-autoscaler

# Pinned by digest so a rebuild gets the same userland; bump it deliberately.
FROM debian:bookworm-slim@sha256:7b140f374b289a7c2befc338f42ebe6441b7ea838a042bbd5acbfca6ec875818
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/vpsie-autoscaler /usr/local/bin/vpsie-autoscaler
# The chart's securityContext runs as this user with a read-only root filesystem; nothing is written
# inside the container.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/vpsie-autoscaler"]
CMD ["run", "--config", "/etc/vpsie-autoscaler/config.yaml"]
