# syntax=docker/dockerfile:1
# The operator and its router (`modelship mirror`) in one small, non-root image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits reuse the cached layer.
COPY Cargo.toml Cargo.lock ./
COPY e2e/Cargo.toml e2e/Cargo.toml
COPY model-server/Cargo.toml model-server/Cargo.toml
COPY oip/Cargo.toml oip/Cargo.toml
RUN mkdir -p src e2e/src model-server/src oip/src \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && touch e2e/src/lib.rs && echo 'fn main() {}' > model-server/src/main.rs \
 && touch oip/src/lib.rs \
 && cargo build --release --locked -p modelship \
 && rm -rf src
COPY src src
COPY oip/src oip/src
RUN touch src/main.rs src/lib.rs oip/src/lib.rs && cargo build --release --locked -p modelship --bin modelship

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/modelship /usr/local/bin/modelship
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/modelship"]
CMD ["run"]
