# Multi-stage build: compile in the Rust image, run in a slim Debian with only the binary.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin agentctl

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /var/lib/agentctl agentctl
COPY --from=build /src/target/release/agentctl /usr/local/bin/agentctl
COPY --from=build /src/config.toml.example /etc/agentctl/config.toml.example
COPY --from=build /src/assets/handlers /usr/local/share/agentctl/handlers
USER agentctl
WORKDIR /var/lib/agentctl
ENV AGENTCTL_STORAGE_DATA_DIR=/var/lib/agentctl \
    AGENTCTL_LISTEN_ADDR=0.0.0.0:8000
EXPOSE 8000
ENTRYPOINT ["agentctl"]
CMD ["--no-tui", "--mode", "webhook"]
