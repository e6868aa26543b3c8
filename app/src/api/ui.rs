//! Serves the studio's web app: every page is rendered on the server by Leptos
//! (`studio-ui` with its `ssr` feature) and hydrated by the wasm bundle under `/pkg`,
//! which `scripts/build-ui.sh` builds into the site directory.

use std::path::{Path, PathBuf};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Router;
use leptos::prelude::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;

use crate::api::error::ApiError;

/// The wasm-bindgen output name (`pkg/studio-ui.js`, `pkg/studio-ui_bg.wasm`).
pub const OUTPUT_NAME: &str = "studio-ui";

/// Where the built bundle lives: `$STUDIO_SITE_DIR`, else `site/` in the working directory.
pub fn site_dir() -> PathBuf {
    std::env::var_os("STUDIO_SITE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("site"))
}

/// Whether the browser bundle was built (without it pages render but do not react).
pub fn bundle_present(site: &Path) -> bool {
    site.join("pkg").join(format!("{OUTPUT_NAME}_bg.wasm")).is_file()
}

/// The pages plus `/pkg/*`; anything else answers 404 (JSON under `/api` and `/v1`).
pub fn router(site: &Path) -> Router {
    let options = LeptosOptions::builder()
        .output_name(OUTPUT_NAME)
        .site_root(site.to_string_lossy().to_string())
        .site_pkg_dir("pkg")
        .build();
    let routes = generate_route_list(studio_ui::App);
    let shell_options = options.clone();
    Router::new()
        .leptos_routes(&options, routes, move || studio_ui::shell(shell_options.clone()))
        // The wasm bundle is ~4 MB; gzip brings it to about a quarter over the wire.
        .nest_service(
            "/pkg",
            Router::new().fallback_service(ServeDir::new(site.join("pkg"))).layer(CompressionLayer::new()),
        )
        .fallback(not_found)
        .with_state(options)
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path();
    if path.starts_with("/api") || path.starts_with("/v1") {
        let message = format!("no such endpoint: {} {path}", req.method());
        return ApiError::status(StatusCode::NOT_FOUND, message).with_code("unknown_url").into_response();
    }
    (
        StatusCode::NOT_FOUND,
        Html("<!doctype html><meta charset=utf-8><title>Not found</title><p>No such page. <a href=\"/\">Open the studio</a>."),
    )
        .into_response()
}
