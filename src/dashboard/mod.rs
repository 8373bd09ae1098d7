//! The web dashboard, served by the supervisor on its loopback port: the system, its logs,
//! traces, service map and metrics, live in the browser (docs/dashboard.md).
//!
//! Access needs the session token, given once in the address and then kept in an HttpOnly,
//! SameSite=Strict cookie. A Host header other than the loopback address is refused, which
//! defeats DNS rebinding. Actions are POSTs that carry the token in a header besides the cookie,
//! so that no page of another site can set them off. The front end is plain HTML and JavaScript
//! modules embedded in the binary, with uPlot vendored for the charts: no CDN, no Node to build.

mod api;

use crate::supervisor::Supervisor;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

const COOKIE: &str = "msctl_session";
/// The header an action carries the token in.
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

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Equal in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The session: `/?token=…` sets the cookie and drops the token from the address; everything
/// else needs the cookie (401), and a POST the token in a header too (403).
async fn guard(
    State(dash): State<Dash>,
    Query(query): Query<HashMap<String, String>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(given) = query.get("token")
        && req.uri().path() == "/"
    {
        if !same(given, &dash.token) {
            return (
                StatusCode::UNAUTHORIZED,
                "wrong token: run `msctl dashboard` for the address",
            )
                .into_response();
        }
        let mut answer = Redirect::to("/").into_response();
        let cookie = format!("{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            answer.headers_mut().insert(header::SET_COOKIE, v);
        }
        return answer;
    }
    if !cookie_token(req.headers()).is_some_and(|t| same(t, &dash.token)) {
        return (
            StatusCode::UNAUTHORIZED,
            "no session: open the address `msctl dashboard` prints",
        )
            .into_response();
    }
    if req.method() == axum::http::Method::POST {
        let header_token = req
            .headers()
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !same(header_token, &dash.token) {
            return (
                StatusCode::FORBIDDEN,
                "an action needs the session token in its request",
            )
                .into_response();
        }
    }
    next.run(req).await
}

const INDEX: &str = include_str!("assets/index.html");

/// The page, with the token for actions in a meta tag: only a page that already has the
/// session gets it, and another site's page cannot read it.
async fn index(State(dash): State<Dash>) -> Response {
    let page = INDEX.replace("{{token}}", &dash.token);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
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
    fn the_session_cookie_is_read_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; msctl_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_token(&h), Some("abc"));
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }
}
