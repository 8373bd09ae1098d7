//! In-process tests of the gateway; users and posts are real in-process servers on loopback, and
//! so is the gateway, served as it runs: its proxy path, and its app for the rest.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::get as route_get;
use msctl_kit::testing::{dead_url, get, json_request, kit, kit_with_timeout, spawn, spawn_proxy};
use serde_json::Value;
use std::time::Duration;

/// Sends `req` over loopback to the gateway `k` and `app` make, served as `main` serves it.
async fn call(
    k: &msctl_kit::Kit,
    app: Router,
    req: Request<Body>,
) -> (StatusCode, HeaderMap, Value) {
    let state = gateway::Gateway {
        peers: k.peers.clone(),
        own_name: "gateway".into(),
    };
    let base = spawn_proxy(k, app, state).await;
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let response = reqwest::Client::new()
        .request(parts.method, format!("{base}{}", parts.uri))
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .expect("the gateway answers");
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.bytes().await.expect("the body arrives whole");
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
    };
    (status, headers, json)
}

struct Upstreams {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    users: String,
    posts: String,
}

async fn upstreams() -> Upstreams {
    let (ud, pd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let users = spawn(
        &kit("users", &[]),
        users::app(users::Users::open(&ud.path().join("u.db")).unwrap()),
    )
    .await;
    let pk = kit("posts", &[("USERS_URL", users.clone())]);
    let posts = spawn(
        &pk,
        posts::app(posts::Posts::open(&pd.path().join("p.db"), pk.peers.clone()).unwrap()),
    )
    .await;
    Upstreams {
        _dirs: (ud, pd),
        users,
        posts,
    }
}

fn gateway(vars: &[(&str, String)], timeout: Option<Duration>) -> (msctl_kit::Kit, Router) {
    let k = match timeout {
        Some(t) => kit_with_timeout("gateway", vars, t),
        None => kit("gateway", vars),
    };
    let app = gateway::app(gateway::Gateway {
        peers: k.peers.clone(),
        own_name: "gateway".into(),
    });
    (k, app)
}

#[tokio::test]
async fn combines_the_user_and_their_posts() {
    let up = upstreams().await;
    let (k, app) = gateway(
        &[
            ("USERS_URL", up.users.clone()),
            ("POSTS_URL", up.posts.clone()),
        ],
        None,
    );
    let (status, _, body) = call(&k, app, get("/users/1/posts")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["name"], "Ada Lovelace");
    assert_eq!(body["posts"].as_array().unwrap().len(), 3);
    assert!(body.get("partial").is_none());
}

#[tokio::test]
async fn routes_by_prefix_preserving_method_body_query_and_status() {
    let up = upstreams().await;
    let (k, app) = gateway(
        &[
            ("USERS_URL", up.users.clone()),
            ("POSTS_URL", up.posts.clone()),
        ],
        None,
    );
    let (status, headers, body) = call(
        &k,
        app.clone(),
        json_request(
            "POST",
            "/users",
            r#"{"name": "Via Gateway", "email": "via@example.com"}"#,
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        headers["location"],
        format!("/users/{}", body["id"]).as_str()
    );
    assert_eq!(headers["content-type"], "application/json");
    let (_, _, body) = call(&k, app.clone(), get("/posts?user_id=2&limit=2")).await;
    assert_eq!(body["posts"].as_array().unwrap().len(), 2);
    assert_eq!(body["limit"], 2);
    let (status, _, body) = call(&k, app.clone(), get("/users/abc")).await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "upstream errors pass as they are"
    );
    let (status, _, _) = call(&k, app.clone(), json_request("DELETE", "/posts/1", "")).await;
    assert_eq!(status, 204);
    let (status, _, body) = call(&k, app, get("/billing/x")).await;
    assert_eq!(status, 404);
    assert_eq!(
        body["error"]["message"],
        "no service `billing` behind this gateway; known services: none"
    );
    // Outside msctl only the variable of the service asked for counts; none lists the others.
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped() {
    let echo = Router::new().route(
        "/echo/headers",
        route_get(|headers: axum::http::HeaderMap| async move {
            let names: Vec<String> = headers.keys().map(|k| k.to_string()).collect();
            axum::Json(names)
        }),
    );
    let echo_url = spawn(&kit("echo", &[]), echo).await;
    let (k, app) = gateway(&[("ECHO_URL", echo_url)], None);
    let req = axum::http::Request::get("/echo/headers")
        .header("x-custom", "1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("tracestate", "vendor=value")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("te", "trailers")
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, _, body) = call(&k, app, req).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"x-custom") && names.contains(&"traceparent"),
        "{names:?}"
    );
    for gone in ["connection", "x-private", "te"] {
        assert!(!names.contains(&gone), "{gone} was forwarded: {names:?}");
    }
}

#[tokio::test]
async fn a_missing_user_is_404() {
    let up = upstreams().await;
    let (k, app) = gateway(
        &[
            ("USERS_URL", up.users.clone()),
            ("POSTS_URL", up.posts.clone()),
        ],
        None,
    );
    let (status, _, body) = call(&k, app, get("/users/404/posts")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["message"], "user 404 does not exist");
}

#[tokio::test]
async fn posts_down_gives_a_partial_answer() {
    let up = upstreams().await;
    let (k, app) = gateway(
        &[("USERS_URL", up.users.clone()), ("POSTS_URL", dead_url())],
        None,
    );
    let (status, _, body) = call(&k, app, get("/users/2/posts")).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["id"], 2);
    assert!(body["posts"].is_null());
    assert_eq!(body["partial"], true);
    assert_eq!(body["errors"][0]["service"], "posts");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable")
    );
}

/// A server that answers only after `delay`, to stand for a hung service.
async fn slow(delay: Duration) -> String {
    let app = Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        "late"
    });
    spawn(&kit("slow", &[]), app).await
}

#[tokio::test]
async fn slow_upstreams_time_out() {
    let up = upstreams().await;
    let slow = slow(Duration::from_secs(5)).await;
    let timeout = Some(Duration::from_millis(200));
    let (k, app) = gateway(
        &[("USERS_URL", up.users.clone()), ("POSTS_URL", slow.clone())],
        timeout,
    );
    let (status, _, body) = call(&k, app, get("/users/1/posts")).await;
    assert_eq!(status, 200);
    assert_eq!(body["partial"], true);
    assert_eq!(body["errors"][0]["code"], "gateway_timeout");

    let (k, app) = gateway(
        &[("USERS_URL", slow), ("POSTS_URL", up.posts.clone())],
        timeout,
    );
    let (status, _, body) = call(&k, app, get("/users/1/posts")).await;
    assert_eq!(status, 504);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("users failed"),
        "{body}"
    );
}

#[tokio::test]
async fn users_down_is_503_naming_users() {
    let up = upstreams().await;
    let (k, app) = gateway(
        &[("USERS_URL", dead_url()), ("POSTS_URL", up.posts.clone())],
        None,
    );
    let (status, _, body) = call(&k, app.clone(), get("/users/1/posts")).await;
    assert_eq!(status, 503);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("users"),
        "{body}"
    );
    let (status, _, _) = call(&k, app, get("/users/x/posts")).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn trace_context_is_passed_on_to_upstreams() {
    let spans = msctl_kit::testing::capture_spans();
    let echo = Router::new().route(
        "/echo/trace",
        route_get(|headers: axum::http::HeaderMap| async move {
            let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            axum::Json(serde_json::json!({"traceparent": get("traceparent"), "tracestate": get("tracestate")}))
        }),
    );
    let echo_url = spawn(&kit("echo", &[]), echo).await;
    let (k, app) = gateway(&[("ECHO_URL", echo_url)], None);
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let req = axum::http::Request::get("/echo/trace")
        .header("traceparent", incoming)
        .header("tracestate", "vendor=value,other=1")
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, headers, body) = call(&k, app, req).await;
    assert_eq!(status, 200);
    let sent = msctl_kit::TraceParent::parse(body["traceparent"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent.trace_id_hex(),
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "same trace"
    );
    assert_ne!(
        sent.span_id_hex(),
        "00f067aa0ba902b7",
        "a new span: the gateway's call"
    );
    assert_eq!(sent.flags, 0, "flags are passed on");
    assert_eq!(body["tracestate"], "vendor=value,other=1");
    let answered = msctl_kit::TraceParent::parse(headers["traceparent"].to_str().unwrap()).unwrap();
    assert_eq!(answered.trace_id, sent.trace_id);
    assert!(
        spans.finished().is_empty(),
        "an unsampled trace is passed on but not recorded"
    );
}

#[tokio::test]
async fn a_forwarded_call_is_a_client_span_under_the_gateways_server_span() {
    use msctl_kit::opentelemetry::trace::{SpanKind, Status};
    let spans = msctl_kit::testing::capture_spans();
    let up = upstreams().await;
    let (k, app) = gateway(&[("USERS_URL", up.users.clone())], None);
    let req = axum::http::Request::get("/users/2")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, headers, _) = call(&k, app, req).await;
    assert_eq!(status, 200);
    let all = spans.finished();
    let named = |kind: SpanKind, name: &str| {
        all.iter()
            .find(|s| s.span_kind == kind && s.name == name)
            .unwrap_or_else(|| panic!("no {kind:?} span {name:?} in {all:#?}"))
    };
    let server = named(SpanKind::Server, "GET /users/{*rest}");
    let client = named(SpanKind::Client, "GET /users/{*rest}");
    let users = named(SpanKind::Server, "GET /users/{id}");
    assert_eq!(
        server.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(client.parent_span_id, server.span_context.span_id());
    assert_eq!(users.parent_span_id, client.span_context.span_id());
    assert_eq!(
        msctl_kit::testing::attribute(client, "http.response.status_code"),
        Some(msctl_kit::opentelemetry::Value::I64(200))
    );
    assert_eq!(
        msctl_kit::testing::attribute(server, "http.route"),
        Some("/users/{*rest}".into())
    );
    assert_eq!(client.status, Status::Unset);
    let answered = msctl_kit::TraceParent::parse(headers["traceparent"].to_str().unwrap()).unwrap();
    assert_eq!(answered.span_id, server.span_context.span_id().to_bytes());
    // The users service's SQLite query nests under its server span.
    let query = named(SpanKind::Internal, "SELECT users");
    assert_eq!(query.parent_span_id, users.span_context.span_id());
    assert_eq!(
        msctl_kit::testing::attribute(query, "db.system.name"),
        Some("sqlite".into())
    );
}
