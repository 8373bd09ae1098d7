//! The web dashboard, served by the supervisor on its loopback port: the system, its logs,
//! traces, service map and metrics, live in the browser (docs/dashboard.md).
//!
//! Every request for data or an action carries the session token in a header (the event stream,
//! which cannot set headers, in its query). The page is given the token once in its address and
//! keeps it in the browser's storage for this origin, which includes the port: no cookie, since
//! a browser sends a cookie for 127.0.0.1 to every port, other local users' servers included.
//! Another site's page can neither read the token nor send the header without a CORS preflight
//! that is never granted. A Host header other than the loopback address is refused, which
//! defeats DNS rebinding. The front end is plain HTML and JavaScript modules embedded in the
//! binary, with uPlot vendored for the charts: no CDN, no Node to build. The page and its assets
//! hold no data, and are served to anyone who can reach the port.

mod api;

use crate::supervisor::Supervisor;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The header every API request carries the token in.
pub const TOKEN_HEADER: &str = "x-msctl-token";

#[derive(Clone)]
pub struct Dash {
    pub sup: Supervisor,
    token: Arc<str>,
    /// `127.0.0.1:PORT` and `localhost:PORT`: the only Host headers answered.
    hosts: Arc<[String]>,
}

/// The dashboard's routes, for the supervisor's loopback server at `addr`.
pub fn routes(sup: Supervisor, token: String, addr: SocketAddr) -> Router {
    let port = addr.port();
    let dash = Dash {
        sup,
        token: token.into(),
        hosts: vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")].into(),
    };
    let pages = Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/api/overview", get(api::overview))
        .route("/api/traces", get(api::traces))
        .route("/api/traces/{id}", get(api::trace))
        .route("/api/logs", get(api::logs))
        .route("/api/map", get(api::map))
        .route("/api/metrics", get(api::metrics))
        .route("/api/live", get(api::live))
        .route("/api/services/{name}/{action}", post(api::action))
        .layer(middleware::from_fn_with_state(dash.clone(), guard))
        .with_state(dash.clone());
    pages.layer(middleware::from_fn_with_state(dash, host_check))
}

/// Refuses a request whose Host is not this loopback address (403).
async fn host_check(State(dash): State<Dash>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !dash.hosts.iter().any(|h| h == host) {
        return (
            StatusCode::FORBIDDEN,
            "msctl's dashboard answers only at its loopback address",
        )
            .into_response();
    }
    next.run(req).await
}

/// The token a request carries: its header, or for the event stream its query.
fn given_token<'a>(headers: &'a HeaderMap, query: &'a HashMap<String, String>) -> Option<&'a str> {
    headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| query.get("token").map(String::as_str))
}

/// Equal in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The API needs the token (401 without it, or with another); the page and its assets hold no
/// data and need none.
async fn guard(
    State(dash): State<Dash>,
    Query(query): Query<HashMap<String, String>>,
    req: Request,
    next: Next,
) -> Response {
    if !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    // Only the event stream may carry it in its address: EventSource sets no headers.
    let query = if req.uri().path() == "/api/live" {
        query
    } else {
        HashMap::new()
    };
    if !given_token(req.headers(), &query).is_some_and(|t| same(t, &dash.token)) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": {
                "code": "no_session",
                "message": "no session: open the address `msctl dashboard` prints",
            }})),
        )
            .into_response();
    }
    next.run(req).await
}

const INDEX: &str = include_str!("assets/index.html");

/// The page: it takes the token from its address into this origin's storage.
async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        INDEX,
    )
        .into_response()
}

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "app.js" => (include_bytes!("assets/app.js"), "text/javascript"),
        "app.css" => (include_bytes!("assets/app.css"), "text/css"),
        "uPlot.iife.min.js" => (
            include_bytes!("assets/vendor/uPlot.iife.min.js"),
            "text/javascript",
        ),
        "uPlot.min.css" => (include_bytes!("assets/vendor/uPlot.min.css"), "text/css"),
        "uPlot.LICENSE" => (include_bytes!("assets/vendor/uPlot.LICENSE"), "text/plain"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_the_header_before_the_query() {
        let mut h = HeaderMap::new();
        let mut q = HashMap::new();
        assert_eq!(given_token(&h, &q), None);
        q.insert("token".to_string(), "fromquery".to_string());
        assert_eq!(given_token(&h, &q), Some("fromquery"));
        h.insert(TOKEN_HEADER, "abc".parse().unwrap());
        assert_eq!(given_token(&h, &q), Some("abc"));
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }
}
