//! Static files compiled into the binary: the web UI and demos (`web/`) and the JavaScript SDK
//! (`sdk/js/src/`), so one binary serves everything a browser needs.
//!
//! In debug builds rust-embed reads the files from disk on each request, which makes UI work a
//! reload away; release builds carry them inside the executable.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

/// `web/`: the landing page, the UI and the demos.
#[derive(RustEmbed)]
#[folder = "../../web/"]
struct Web;

/// `sdk/js/src/`: the SDK's ES modules, served under `/sdk/`.
#[derive(RustEmbed)]
#[folder = "../../sdk/js/src/"]
struct Sdk;

/// `GET /`: the web UI's landing page.
pub(crate) async fn index() -> Response {
    serve::<Web>("ui/index.html")
}

/// `GET /sdk/{*path}`: the SDK modules; `/sdk/kilat.js` is the entry point.
pub(crate) async fn sdk(Path(path): Path<String>) -> Response {
    serve::<Sdk>(&path)
}

/// `GET /demo` and `/demo/`: the index of the demos.
pub(crate) async fn demo_index() -> Response {
    serve::<Web>("demo/index.html")
}

/// `GET /favicon.ico` and `/favicon.svg`: the lightning bolt, as SVG (browsers take an SVG
/// icon whatever the path says, going by the content type).
pub(crate) async fn favicon() -> Response {
    serve::<Web>("favicon.svg")
}

/// `GET /demo/chat`, `/demo/board` and the demos' files.
pub(crate) async fn demo(Path(path): Path<String>) -> Response {
    let file = if path.contains('.') {
        format!("demo/{path}")
    } else {
        format!("demo/{path}/index.html")
    };
    serve::<Web>(&file)
}

/// `GET /ui/{*path}`: the UI's own assets.
pub(crate) async fn ui(Path(path): Path<String>) -> Response {
    serve::<Web>(&format!("ui/{path}"))
}

/// A file of the admin console (`web/admin/`).
pub(crate) fn admin(path: &str) -> Response {
    serve::<Web>(&format!("admin/{path}"))
}

fn serve<E: RustEmbed>(path: &str) -> Response {
    let Some(file) = E::get(path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let mut response = file.data.into_owned().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "ts" => "text/plain; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}
