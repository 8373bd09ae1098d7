//! The limit for a proxy in Rust: axum in front of hyper's pooled client, passing every request
//! to one upstream and streaming the answer back, with nothing else (no discovery, tracing, logs
//! or retries). Measured beside nginx, it shows how much of the gateway's distance from nginx is
//! the runtime's and how much is the gateway's own.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type Upstream = (Client<HttpConnector, Body>, String);

async fn forward(State((client, upstream)): State<Upstream>, mut request: Request) -> Response {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("http://{upstream}{path}").parse::<Uri>() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    *request.uri_mut() = uri;
    match client.request(request).await {
        Ok(answer) => answer.map(Body::new),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

#[tokio::main]
async fn main() {
    let var = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is needed: PORT=... UPSTREAM=host:port"))
    };
    let port: u16 = var("PORT").parse().expect("PORT is a port number");
    let upstream = var("UPSTREAM");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}: {e}"));
    let client = Client::builder(TokioExecutor::new()).build_http();
    let app = Router::new()
        .fallback(forward)
        .with_state((client, upstream));
    axum::serve(listener, app)
        .await
        .expect("the bare proxy runs");
}
