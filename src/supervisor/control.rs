//! The supervisor's control API on loopback, and the client the other commands use to reach it.
//! Every call carries the token from the registry, which only the owner can read.

use super::Supervisor;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use msctl_kit::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;

#[derive(Debug, Clone)]
struct Ctl {
    token: String,
    sup: Supervisor,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StartRequest {
    pub services: Vec<String>,
}

pub async fn serve(listener: tokio::net::TcpListener, token: String, sup: Supervisor) {
    let app = Router::new()
        .route("/v1/ping", get(ping))
        .route("/v1/down", post(down))
        .route("/v1/start", post(start))
        .route("/v1/services/{name}/{action}", post(act));
    let ctl = Ctl { token, sup };
    let app = app
        .route_layer(middleware::from_fn_with_state(ctl.clone(), require_token))
        .with_state(ctl);
    let _ = axum::serve(listener, app).await;
}

/// Refuses any call without the registry's token.
async fn require_token(State(ctl): State<Ctl>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(ctl.token.as_str()) {
        next.run(req).await
    } else {
        failed(StatusCode::UNAUTHORIZED, "missing or wrong token".into())
    }
}

fn failed(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

async fn ping() -> Response {
    Json(json!({"pid": std::process::id()})).into_response()
}

async fn down(State(ctl): State<Ctl>) -> Response {
    ctl.sup.request_down().await;
    Json(json!({"stopped": true})).into_response()
}

async fn start(State(ctl): State<Ctl>, Json(req): Json<StartRequest>) -> Response {
    if let Err(e) = ctl.sup.reload() {
        return failed(StatusCode::UNPROCESSABLE_ENTITY, e);
    }
    match ctl.sup.start(&req.services).await {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(f) => failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {}", f.instance, f.reason),
        ),
    }
}

async fn act(State(ctl): State<Ctl>, Path((name, action)): Path<(String, String)>) -> Response {
    let result = match action.as_str() {
        "stop" => ctl.sup.stop_service(&name).await,
        "restart" => ctl.sup.restart_service(&name).await,
        "start" => match ctl
            .sup
            .reload()
            .map(|_| ctl.sup.config().services.contains_key(&name))
        {
            Err(e) => Err(e),
            Ok(true) => ctl
                .sup
                .start(std::slice::from_ref(&name))
                .await
                .map_err(|f| format!("{}: {}", f.instance, f.reason)),
            Ok(false) => Err(format!("no service `{name}`")),
        },
        other => return failed(StatusCode::NOT_FOUND, format!("unknown action `{other}`")),
    };
    match result {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(e) if e.starts_with("no service") => failed(StatusCode::NOT_FOUND, e),
        Err(e) => failed(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Talks to a running supervisor, found through the registry.
#[derive(Debug, Clone)]
pub struct ControlClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ControlClient {
    pub fn new(registry: &Registry) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("the control client builds");
        Self {
            base: format!("http://{}", registry.supervisor.control),
            token: registry.supervisor.token.clone(),
            http,
        }
    }

    /// Whether the supervisor answers, within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let call = self
            .http
            .get(format!("{}/v1/ping", self.base))
            .bearer_auth(&self.token)
            .timeout(timeout)
            .send();
        matches!(call.await, Ok(r) if r.status().is_success())
    }

    /// POSTs to the control API; `Err` carries the supervisor's message.
    pub async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("the supervisor did not answer: {e}"))?;
        let ok = response.status().is_success();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if ok {
            Ok(body)
        } else {
            Err(body["error"]
                .as_str()
                .unwrap_or("the supervisor refused")
                .to_string())
        }
    }
}
