//! Serves the studio's web app: every page is rendered on the server by Leptos
//! (`studio-ui` with its `ssr` feature) and hydrated by the wasm bundle under `/pkg`,
//! which `scripts/build-ui.sh` builds into the site directory.
//!
//! The bundle is served under names hashed from its content (`/pkg/studio-ui-<hash>.js`,
//! `…_bg.wasm`) as immutable for a year, so a second visit downloads only the page; brotli
//! and gzip copies are made once, off the request path, and kept next to the files. Pages
//! and anything else under `/pkg` are compressed as they are sent.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::Router;
use leptos::prelude::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use studio_ui::bundle::{Asset, Bundle};
use tower::ServiceExt;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;

use crate::api::error::ApiError;
use crate::store::{Store, StoreError};

/// The wasm-bindgen output name (`pkg/studio-ui.js`, `pkg/studio-ui_bg.wasm`).
pub const OUTPUT_NAME: &str = "studio-ui";

/// How the hashed bundle is cached: its name changes with its content.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Where the built bundle lives: `$STUDIO_SITE_DIR`, else `site/` in the working directory.
pub fn site_dir() -> PathBuf {
    std::env::var_os("STUDIO_SITE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("site"))
}

/// Whether the browser bundle was built (without it pages render but do not react).
pub fn bundle_present(site: &Path) -> bool {
    site.join("pkg").join(format!("{OUTPUT_NAME}_bg.wasm")).is_file()
}

/// The pages plus `/pkg/*`; anything else answers 404 (JSON under `/api` and `/v1`), and so
/// does the page of a template that does not exist (the page itself says so once hydrated).
pub fn router(site: &Path, store: Store) -> Router {
    let pkg = site.join("pkg");
    let bundle = Bundle::open(&pkg, OUTPUT_NAME).map(Arc::new);
    if let Some(b) = bundle.clone() {
        // Seconds of CPU once per build (brotli at its best); until then the bundle is
        // gzipped as it is sent.
        let dir = pkg.clone();
        std::thread::Builder::new().name("studio-bundle".into()).spawn(move || b.compress(&dir)).ok();
    }
    let output_name = bundle.as_ref().map(|b| b.output_name.clone()).unwrap_or_else(|| OUTPUT_NAME.to_string());
    let options = LeptosOptions::builder()
        .output_name(output_name)
        .site_root(site.to_string_lossy().to_string())
        .site_pkg_dir("pkg")
        .build();
    let routes = generate_route_list(studio_ui::App);
    let shell_options = options.clone();
    let files = ServeDir::new(pkg);
    let assets = Router::new().fallback(move |req: Request| bundle_file(bundle.clone(), files.clone(), req));
    Router::new()
        .leptos_routes(&options, routes, move || studio_ui::shell(shell_options.clone()))
        .nest_service("/pkg", assets)
        .fallback(not_found)
        .with_state(options)
        .layer(middleware::from_fn_with_state(store, missing_template_is_404))
        // Pages (the stylesheet is inlined) and files without a compressed copy; a
        // response that is already compressed passes through.
        .layer(CompressionLayer::new())
}

/// A hashed bundle file (immutable, precompressed when it can be), else a file of `pkg`.
async fn bundle_file(bundle: Option<Arc<Bundle>>, files: ServeDir, req: Request) -> Response {
    let name = req.uri().path().trim_start_matches('/');
    match bundle.as_ref().and_then(|b| b.get(name)) {
        Some(asset) => asset_response(asset, req.headers()),
        None => match files.oneshot(req).await {
            Ok(r) => r.into_response(),
            Err(e) => match e {},
        },
    }
}

/// Whether the request accepts `encoding` (`br`, `gzip`): named in `Accept-Encoding`
/// and not refused with `q=0`.
fn accepts(headers: &HeaderMap, encoding: &str) -> bool {
    let values = headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok());
    values.flat_map(|v| v.split(',')).any(|part| {
        let mut it = part.split(';').map(str::trim);
        let named = it.next().is_some_and(|n| n.eq_ignore_ascii_case(encoding));
        let q = it.find_map(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok())).unwrap_or(1.0);
        named && q > 0.0
    })
}

fn asset_response(asset: &Asset, headers: &HeaderMap) -> Response {
    let (body, encoding) = match (asset.br.get(), asset.gzip.get()) {
        (Some(br), _) if accepts(headers, "br") => (br.clone(), Some("br")),
        (_, Some(gz)) if accepts(headers, "gzip") => (gz.clone(), Some("gzip")),
        _ => (asset.raw.clone(), None),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(e) = encoding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(e));
    }
    r
}

/// The template a page belongs to: `/templates/{name}`, `/t/{name}` (and pages under it),
/// `/evaluate/{name}`.
fn template_of_page(path: &str) -> Option<String> {
    let mut parts = path.trim_start_matches('/').split('/');
    let (page, name) = (parts.next()?, parts.next()?);
    let name = percent_encoding::percent_decode_str(name).decode_utf8().ok()?;
    (matches!(page, "templates" | "t" | "evaluate") && !name.is_empty()).then(|| name.into_owned())
}

/// A page of an unknown template is still rendered (it says "not found" and links on), but
/// with status 404, so links checkers, crawlers and tests see a missing page as missing.
async fn missing_template_is_404(State(store): State<Store>, req: Request, next: Next) -> Response {
    let name = template_of_page(req.uri().path());
    let mut response = next.run(req).await;
    if let Some(name) = name {
        if response.status() == StatusCode::OK
            && matches!(store.get_template(&name).await, Err(StoreError::NotFound(_)))
        {
            *response.status_mut() = StatusCode::NOT_FOUND;
        }
    }
    response
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_pages_name_their_template() {
        assert_eq!(template_of_page("/templates/movie-sentiment-ko").as_deref(), Some("movie-sentiment-ko"));
        assert_eq!(template_of_page("/t/a%20b/batch").as_deref(), Some("a b"));
        assert_eq!(template_of_page("/evaluate/x").as_deref(), Some("x"));
        assert_eq!(template_of_page("/t/%FF"), None);
        assert_eq!(template_of_page("/t/"), None);
        assert_eq!(template_of_page("/library"), None);
        assert_eq!(template_of_page("/compare"), None);
    }

    #[test]
    fn accept_encoding_is_read_by_name_and_q() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(accepts(&h("gzip, deflate, br, zstd"), "br"));
        assert!(accepts(&h("gzip;q=0.5, br;q=1.0"), "gzip"));
        assert!(!accepts(&h("gzip, br;q=0"), "br"));
        assert!(!accepts(&h("gzip"), "br"));
        assert!(!accepts(&HeaderMap::new(), "gzip"));
    }
}
