//! The limit the data path is measured against: an axum server on loopback answering every
//! request with one fixed JSON body (a user, as users would), doing nothing else.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;

const USER: &str = r#"{"email":"ada@example.com","id":1,"name":"Ada Lovelace"}"#;

#[tokio::main]
async fn main() {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}: {e}"));
    let app = Router::new().fallback(|| async {
        ([(header::CONTENT_TYPE, "application/json")], USER).into_response()
    });
    axum::serve(listener, app)
        .await
        .expect("the bare server runs");
}
