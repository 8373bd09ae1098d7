//! Helpers for in-process tests of services: a kit with a default environment, a one-shot call
//! that returns status and JSON, and a real loopback server for a peer.

use crate::{Kit, ServiceEnv, Tracer};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use tower::ServiceExt;

/// A kit for `service` with default settings, no tracing, and `vars` as its environment
/// (`USERS_URL` and the like).
pub fn kit(service: &str, vars: &[(&str, String)]) -> Kit {
    let env = ServiceEnv::from_lookup(service, |_| None).expect("the default environment is valid");
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Kit::new(
        env,
        vars,
        Tracer::disabled(service, &format!("{service}-1")),
        "test",
    )
}

/// Sends `req` through `kit.router(app)` and returns the status, headers and JSON body
/// (`Null` for an empty body).
pub async fn call(kit: &Kit, app: Router, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = kit
        .router(app)
        .oneshot(req)
        .await
        .expect("routers are infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body reads");
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, headers, json)
}

/// A request with a JSON body.
pub fn json_request(method: &str, uri: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request builds")
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .body(Body::empty())
        .expect("request builds")
}

/// Serves `kit.router(app)` on a free loopback port for the rest of the test; returns its base URL.
pub async fn spawn(kit: &Kit, app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback binds");
    let addr: SocketAddr = listener.local_addr().expect("bound");
    let router = kit.router(app);
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// A loopback address where nothing listens: bound, then released.
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback binds");
    format!("http://{}", listener.local_addr().expect("bound"))
}
