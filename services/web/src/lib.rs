//! The web service: the sample system's UI layer. It serves a small app (plain HTML, CSS and an
//! ES module, embedded in the binary) under `/web/`, which the gateway's `/` leads to; the
//! page calls the gateway for everything else. Each action in the page starts a W3C trace; the
//! page reports the action's own span here, and this service hands it to the OTLP receiver
//! msctl gives every instance, so that a trace starts at the click.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use msctl_contract::span::{KIND_CLIENT, Resource, Span, SpanStatus};
use msctl_contract::trace_context::TraceParent;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
/// The longest action name and path a span report may carry.
const MAX_TEXT: usize = 200;

/// Where the page's spans go: the OTLP receiver and its headers, from the standard variables.
#[derive(Debug, Clone, Default)]
pub struct Web {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    traces_url: Option<String>,
    headers: Vec<(String, String)>,
    instance: String,
    registry: Option<String>,
    client: Option<reqwest::Client>,
}

impl Web {
    pub fn from_env() -> Self {
        use msctl_contract::env as var;
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let traces_url = get(var::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).or_else(|| {
            get(var::OTEL_EXPORTER_OTLP_ENDPOINT).map(|e| msctl_contract::otlp::traces_url(&e))
        });
        let headers = get(var::OTEL_EXPORTER_OTLP_HEADERS)
            .map(|h| msctl_contract::otlp::parse_headers(&h))
            .unwrap_or_default();
        Self::new(
            traces_url,
            headers,
            get(var::INSTANCE).unwrap_or_else(|| "web-1".into()),
            get(var::REGISTRY),
        )
    }

    /// `traces_url` is where reported spans are sent (none: they are dropped); `registry` is
    /// the registry file, where the dashboard's address is read.
    pub fn new(
        traces_url: Option<String>,
        headers: Vec<(String, String)>,
        instance: String,
        registry: Option<String>,
    ) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .ok();
        Self {
            inner: Arc::new(Inner {
                traces_url,
                headers,
                instance,
                registry,
                client,
            }),
        }
    }
}

pub fn app(web: Web) -> Router {
    Router::new()
        .route("/web", get(|| async { Redirect::permanent("/web/") }))
        .route(
            "/web/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/web/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/web/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/web/config", get(config))
        .route("/web/spans", post(report))
        .with_state(web)
}

/// An embedded file. The page and its module come from this service only (no CDN), and say so
/// to the browser: no inline script, no other origin.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

/// What the page needs to know: the dashboard's address, for links to a trace there.
async fn config(State(web): State<Web>) -> Json<Value> {
    let dashboard = web
        .inner
        .registry
        .as_deref()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|r| r["supervisor"]["control"].as_str().map(str::to_string))
        .map(|control| format!("http://{control}"));
    Json(json!({"dashboard": dashboard}))
}

/// One action in the page, as it reports it once its request has answered.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// What the user did: `create user`, `delete user 2`.
    pub name: String,
    /// The `traceparent` the page sent with the request.
    pub traceparent: String,
    /// When the action began, in milliseconds since the epoch (the page's clock).
    pub start_ms: f64,
    pub duration_ms: f64,
    pub method: String,
    pub path: String,
    /// The answer's status; 0 when there was none.
    pub status: u16,
}

fn bad(message: impl Into<String>) -> Response {
    msctl_kit::ApiError::unprocessable(message).into_response()
}

/// The action as a span of the `web` service: the root of its trace, a client span whose
/// child is the gateway's server span.
pub fn span_of(action: &Action, instance: &str, user_agent: Option<&str>) -> Result<Span, String> {
    let trace = TraceParent::parse(&action.traceparent)
        .ok_or("traceparent is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)")?;
    if action.name.is_empty() || action.name.len() > MAX_TEXT || action.path.len() > MAX_TEXT {
        return Err(format!(
            "name must be 1 to {MAX_TEXT} characters, and path at most {MAX_TEXT}"
        ));
    }
    let sane = |ms: f64| (0.0..1e15).contains(&ms);
    if !sane(action.start_ms) || !sane(action.duration_ms) || action.duration_ms > 3_600_000.0 {
        return Err("start_ms and duration_ms must be non-negative milliseconds".into());
    }
    let start = (action.start_ms * 1e6) as u64;
    let mut attributes = Map::new();
    attributes.insert("ui.action".into(), json!(action.name));
    attributes.insert("http.request.method".into(), json!(action.method));
    attributes.insert("url.path".into(), json!(action.path));
    if let Some(agent) = user_agent {
        attributes.insert(
            "user_agent.original".into(),
            json!(agent.chars().take(MAX_TEXT).collect::<String>()),
        );
    }
    let outcome = match action.status {
        0 => Err(("connection_failed", "no answer".to_string())),
        code => Ok(code),
    };
    let status = SpanStatus::of_call(&mut attributes, outcome);
    Ok(Span {
        trace_id: trace.trace_id_hex(),
        span_id: trace.span_id_hex(),
        parent_span_id: None,
        name: action.name.clone(),
        kind: KIND_CLIENT,
        start_time_unix_nano: start,
        end_time_unix_nano: start + (action.duration_ms * 1e6) as u64,
        status,
        attributes,
        resource: Resource {
            service_name: "web".into(),
            service_instance_id: instance.to_string(),
        },
        events: Vec::new(),
        trace_state: None,
    })
}

/// `POST /web/spans`: the page's span of one action, handed to the OTLP receiver. Tracing never
/// fails the page: a receiver that does not answer costs the span, not the request.
async fn report(State(web): State<Web>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let action: Action = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return bad(format!("not a span report: {e}")),
    };
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let span = match span_of(&action, &web.inner.instance, agent) {
        Ok(span) => span,
        Err(e) => return bad(e),
    };
    let (Some(url), Some(client)) = (&web.inner.traces_url, &web.inner.client) else {
        return StatusCode::ACCEPTED.into_response();
    };
    let mut request = client
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .json(&msctl_contract::otlp::export_request(&[span]));
    for (k, v) in &web.inner.headers {
        request = request.header(k.as_str(), v.as_str());
    }
    match request.send().await {
        Ok(answer) if answer.status().is_success() => StatusCode::ACCEPTED.into_response(),
        Ok(answer) => {
            tracing::warn!(
                status = answer.status().as_u16(),
                "the receiver refused a page span"
            );
            StatusCode::ACCEPTED.into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "a page span could not be delivered");
            StatusCode::ACCEPTED.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn action(traceparent: &str) -> Action {
        Action {
            name: "create user".into(),
            traceparent: traceparent.into(),
            start_ms: 1_700_000_000_000.5,
            duration_ms: 12.25,
            method: "POST".into(),
            path: "/users".into(),
            status: 201,
        }
    }

    #[test]
    fn an_action_becomes_the_root_span_of_its_trace() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let span = span_of(&action(tp), "web-1", Some("test")).unwrap();
        assert_eq!(span.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(span.span_id, "b7ad6b7169203331");
        assert_eq!(span.parent_span_id, None);
        assert_eq!(span.kind, KIND_CLIENT);
        assert_eq!(span.resource.service_name, "web");
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            12_250_000
        );
        assert_eq!(span.attributes["http.response.status_code"], 201);
        let mut failed = action(tp);
        failed.status = 0;
        assert_eq!(span_of(&failed, "web-1", None).unwrap().status.code, 2);
    }

    #[test]
    fn bad_reports_are_refused_by_what_is_wrong() {
        assert!(
            span_of(&action("00-zz-11-01"), "web-1", None)
                .unwrap_err()
                .contains("traceparent")
        );
        let mut long = action("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        long.name = "x".repeat(201);
        assert!(span_of(&long, "web-1", None).unwrap_err().contains("name"));
        let mut negative = action("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        negative.duration_ms = -1.0;
        assert!(span_of(&negative, "web-1", None).is_err());
    }

    #[tokio::test]
    async fn the_page_and_its_module_are_served_from_this_service_alone() {
        let app = app(Web::new(None, vec![], "web-1".into(), None));
        let answer = app
            .clone()
            .oneshot(Request::get("/web/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let csp = answer.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20)
            .await
            .unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            html.contains("src=\"/web/app.js\"") && !html.contains("http"),
            "{html}"
        );
        let answer = app
            .oneshot(
                Request::post("/web/spans")
                    .header("content-type", "application/json")
                    .body(Body::from("{\"name\": 1}"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(answer.status(), 422);
    }
}
