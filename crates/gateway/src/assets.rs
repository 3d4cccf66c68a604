//! The browser clients, embedded in the binary: the player widget, the agent
//! console, the shared protocol client, translations, and the demo casino page.
//! Files come from `web-widget/static/` at build time; nothing is built.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::AppState;

#[derive(rust_embed::Embed)]
#[folder = "../../web-widget/static/"]
struct Assets;

/// Serves an embedded file for any path no other route took. `/` is the demo page
/// in demo mode; `/console` is the agent console.
pub(crate) async fn serve(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path == "api" || path.starts_with("api/") {
        // The API answers in JSON, even for a path it does not have.
        let body = serde_json::json!({ "error": "not_found", "message": "no such API endpoint" });
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    }
    let path = match path {
        "" if state.config.demo => "demo/index.html",
        "" => {
            return (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "Pitboss is running. Agents: /console\n",
            )
                .into_response()
        }
        "console" | "console/" => CONSOLE_PAGE,
        // The pretend casino is part of the demo only.
        p if p.starts_with("demo/") && !state.config.demo => "",
        p => p,
    };
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag)
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mime = file.metadata.mimetype();
    let mut response = file.data.into_owned().into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidate every time: the files change with the binary, and an ETag
    // check costs one round trip without the body.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if path == CONSOLE_PAGE {
        // The console runs only its own scripts and styles, talks only to its own
        // server, and is never framed by another page (clickjacking).
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONSOLE_POLICY),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

/// The agent console's page.
const CONSOLE_PAGE: &str = "console/index.html";

/// What the console's page may load and do.
const CONSOLE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every embedded file's path and size, for size reports.
pub fn embedded_files() -> Vec<(String, usize)> {
    Assets::iter()
        .filter_map(|p| Assets::get(&p).map(|f| (p.to_string(), f.data.len())))
        .collect()
}
