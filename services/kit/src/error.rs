//! The one error shape every service answers with: `{"error": {"code", "message"}}`.

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error a handler returns; it renders as JSON with its status.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

pub use msctl_contract::root_cause;

/// The machine-readable code for a status, used when a framework answer carries none.
pub fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable_entity",
        StatusCode::BAD_GATEWAY => "bad_gateway",
        StatusCode::SERVICE_UNAVAILABLE => "service_unavailable",
        StatusCode::GATEWAY_TIMEOUT => "gateway_timeout",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

/// Rewrites error answers that are not JSON yet (axum's extractor rejections, its empty 404 and
/// 405, the body-limit 413) into the JSON error shape, so no client ever has to parse plain text.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    in_json(next.run(req).await, &method, &path).await
}

/// `response` as it is, or, if it is an error that is not JSON, as the JSON error shape.
pub async fn in_json(response: Response, method: &axum::http::Method, path: &str) -> Response {
    let content_type = response.headers().get(header::CONTENT_TYPE);
    if !needs_json(response.status(), content_type.map(HeaderValue::as_bytes)) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, ERROR_TEXT_LIMIT)
        .await
        .unwrap_or_default();
    as_json_error(parts, method, path, &text)
}

/// How much of an error answer that is not JSON is read to be its message.
pub const ERROR_TEXT_LIMIT: usize = 16 * 1024;

/// An error answer that was not JSON (`parts` and its body's `text`) as the JSON error shape.
pub fn as_json_error(
    mut parts: axum::http::response::Parts,
    method: &axum::http::Method,
    path: &str,
    text: &[u8],
) -> Response {
    let status = parts.status;
    let text = String::from_utf8_lossy(text).trim().to_string();
    let message = match (status, text.is_empty()) {
        (StatusCode::NOT_FOUND, true) => format!("no route for {method} {path}"),
        (StatusCode::METHOD_NOT_ALLOWED, true) => format!("{method} is not allowed on {path}"),
        (StatusCode::PAYLOAD_TOO_LARGE, _) => format!("request body is too large: {text}"),
        (_, true) => status.canonical_reason().unwrap_or("error").to_string(),
        (_, false) => text,
    };
    let body = json!({"error": {"code": code_for(status), "message": message}});
    // The length was the replaced body's (a proxied answer keeps its own).
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// Whether an answer with `status` and `content_type` is an error the JSON error shape must
/// replace.
pub fn needs_json(status: StatusCode, content_type: Option<&[u8]>) -> bool {
    status.as_u16() >= 400 && !content_type.is_some_and(|v| v.starts_with(b"application/json"))
}
