//! The API gateway: the single entry point. It routes `/NAME/…` to the service NAME found by
//! discovery, and combines users and posts for `GET /users/{id}/posts`.

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use msctl_kit::discovery::DiscoveryError;
use msctl_kit::params::parse_id;
use msctl_kit::server::RouteName;
use msctl_kit::{ApiError, PeerError, PeerRequest, Peers};
use serde_json::{Value, json};

/// The gateway accepts bodies this large; each upstream applies its own, smaller, limit.
pub const BODY_LIMIT: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Gateway {
    pub peers: Peers,
    /// The gateway's own service name, never routed to, so a request cannot loop.
    pub own_name: String,
}

pub fn app(state: Gateway) -> Router {
    Router::new()
        .route("/users/{id}/posts", get(user_posts))
        .route("/{service}", any(proxy))
        .route("/{service}/{*rest}", any(proxy))
        .with_state(state)
}

/// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        let drop = HOP_BY_HOP.contains(&n)
            || listed.iter().any(|l| l == n)
            || name == header::HOST
            || name == header::CONTENT_LENGTH;
        if !drop {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn unknown_service(service: &str, known: &[String]) -> ApiError {
    let known = if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    };
    ApiError::not_found(format!(
        "no service `{service}` behind this gateway; known services: {known}"
    ))
}

async fn proxy(
    State(gw): State<Gateway>,
    Path(params): Path<Vec<(String, String)>>,
    OriginalUri(uri): OriginalUri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let service = params.first().map(|(_, v)| v.clone()).unwrap_or_default();
    // Spans name the route with the service in it: `/users/{*rest}`, not `/{service}/{*rest}`.
    let route = if params.len() > 1 {
        format!("/{service}/{{*rest}}")
    } else {
        format!("/{service}")
    };
    let mut response = forward(gw, service, route.clone(), uri, method, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(RouteName(route));
    response
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    gw: Gateway,
    service: String,
    route: String,
    uri: axum::http::Uri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if service == gw.own_name {
        let mut known = gw.peers.discovery().known_services();
        known.retain(|s| *s != gw.own_name);
        return Err(unknown_service(&service, &known));
    }
    let request = PeerRequest {
        route,
        path_and_query: uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| uri.path().to_string()),
        service,
        method,
        headers: end_to_end(&headers),
        body,
    };
    match gw.peers.send(request).await {
        Ok(answer) => {
            let mut response = Response::new(Body::from(answer.body));
            *response.status_mut() = answer.status;
            let mut headers = end_to_end(&answer.headers);
            // The answer carries the gateway's own server span, set by the kit.
            headers.remove("traceparent");
            *response.headers_mut() = headers;
            Ok(response)
        }
        Err(PeerError::Discovery(DiscoveryError::Unknown { service, known })) => {
            let known: Vec<String> = known.into_iter().filter(|s| *s != gw.own_name).collect();
            Err(unknown_service(&service, &known))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /users/{id}/posts`: the user and their posts, asked of both services at once.
async fn user_posts(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "user id")?;
    let (user, posts) = tokio::join!(
        gw.peers.send(PeerRequest::get(
            "users",
            format!("/users/{id}"),
            "/users/{id}"
        )),
        gw.peers.send(PeerRequest::get(
            "posts",
            format!("/posts?user_id={id}&limit=100"),
            "/posts"
        )),
    );
    let user = match user {
        Ok(answer) if answer.status.is_success() => answer
            .json()
            .map_err(|e| users_failed(StatusCode::BAD_GATEWAY, e.to_string()))?,
        Ok(answer) if answer.status == StatusCode::NOT_FOUND => {
            return Err(ApiError::not_found(format!("user {id} does not exist")));
        }
        Ok(answer) => {
            return Err(users_failed(
                StatusCode::BAD_GATEWAY,
                format!("users answered {}", answer.status),
            ));
        }
        Err(e) => return Err(users_failed(e.status(), e.to_string())),
    };
    let posts = posts.and_then(|answer| {
        if !answer.status.is_success() {
            return Err(PeerError::BadAnswer {
                service: "posts".into(),
                message: format!("answered {}", answer.status),
            });
        }
        let body = answer.json()?;
        match body.get("posts") {
            Some(list @ Value::Array(_)) => Ok(list.clone()),
            _ => Err(PeerError::BadAnswer {
                service: "posts".into(),
                message: "the answer has no `posts` list".into(),
            }),
        }
    });
    let body = match posts {
        Ok(list) => json!({"user": user, "posts": list}),
        Err(e) => json!({
            "user": user,
            "posts": null,
            "partial": true,
            "errors": [{"service": "posts", "code": msctl_kit::error::code_for(e.status()), "message": e.to_string()}],
        }),
    };
    Ok(Json(body).into_response())
}

fn users_failed(status: StatusCode, why: String) -> ApiError {
    ApiError::new(
        status,
        msctl_kit::error::code_for(status),
        format!("users failed: {why}"),
    )
}
