//! The supervisor's control API on loopback (docs/control-api.md), and the client the other
//! commands reach it with. Requests and answers are the contract's typed enums; every call
//! carries the token from the registry, which only the owner can read, and has a time limit.

use super::Supervisor;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::post;
use axum::{Json, Router};
use msctl_contract::control::{self, Failure, FailureKind, Request, Response};
use msctl_contract::registry::Registry;
use std::time::Duration;

#[derive(Debug, Clone)]
struct Ctl {
    token: String,
    sup: Supervisor,
}

/// Serves the control API, and `extra` (the OTLP receiver) beside it on the same port.
pub async fn serve(
    listener: tokio::net::TcpListener,
    token: String,
    sup: Supervisor,
    extra: Router,
) {
    let app = Router::new()
        .route(control::PATH, post(handle))
        .with_state(Ctl { token, sup })
        .merge(extra);
    let _ = axum::serve(listener, app).await;
}

async fn handle(
    State(ctl): State<Ctl>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> HttpResponse {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given != Some(ctl.token.as_str()) {
        return answer(
            StatusCode::UNAUTHORIZED,
            failed(FailureKind::Refused, "missing or wrong token".into()),
        );
    }
    let request: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                failed(FailureKind::Refused, format!("not a control request: {e}")),
            );
        }
    };
    answer(StatusCode::OK, ctl.sup.handle(request).await)
}

fn answer(status: StatusCode, response: Response) -> HttpResponse {
    (status, Json(response)).into_response()
}

pub fn failed(kind: FailureKind, message: String) -> Response {
    Response::Failed(Failure {
        kind,
        message,
        instance: None,
    })
}

/// Why a control call got no answer it could use.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the supervisor did not answer within {}", crate::supervisor::health::ms(*.0))]
    Timeout(Duration),
    #[error("the supervisor could not be reached: {0}")]
    Unreachable(String),
    #[error("the supervisor sent an answer msctl cannot read: {0}")]
    Garbled(String),
}

/// Talks to a running supervisor, found through the registry.
#[derive(Debug, Clone)]
pub struct ControlClient {
    url: String,
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
            url: format!("http://{}{}", registry.supervisor.control, control::PATH),
            token: registry.supervisor.token.clone(),
            http,
        }
    }

    /// Sends one request and waits at most `limit` for its answer.
    pub async fn send(&self, request: &Request, limit: Duration) -> Result<Response, CallError> {
        let call = async {
            let response = self
                .http
                .post(&self.url)
                .bearer_auth(&self.token)
                .json(request)
                .send()
                .await
                .map_err(|e| CallError::Unreachable(msctl_contract::root_cause(&e)))?;
            let bytes = response
                .bytes()
                .await
                .map_err(|e| CallError::Unreachable(msctl_contract::root_cause(&e)))?;
            serde_json::from_slice(&bytes).map_err(|e| CallError::Garbled(e.to_string()))
        };
        tokio::time::timeout(limit, call)
            .await
            .map_err(|_| CallError::Timeout(limit))?
    }

    /// Whether the supervisor answers, within `limit`: `None` if not, else why it cannot write
    /// the registry, if it cannot.
    pub async fn ping(&self, limit: Duration) -> Option<Option<String>> {
        match self.send(&Request::Ping, limit).await {
            Ok(Response::Pong { registry_error, .. }) => Some(registry_error),
            _ => None,
        }
    }
}
