//! The API gateway: the single entry point. It routes `/NAME/…` to the service NAME found by
//! discovery, and combines users and posts for `GET /users/{id}/posts`.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures_util::StreamExt;
use msctl_kit::discovery::DiscoveryError;
use msctl_kit::params::parse_id;
use msctl_kit::proxy::{Route, end_to_end};
use msctl_kit::server::RouteName;
use msctl_kit::{ApiError, PeerError, PeerRequest, Peers};
use serde_json::json;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The gateway passes on request bodies this large; each upstream applies its own limit.
/// Answers have no limit: they pass through as they arrive, never held whole.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Request bodies up to this size are read whole before they are sent on, so that a call that
/// failed may be sent again; larger or unsized ones stream.
const WHOLE_UP_TO: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Gateway {
    pub peers: Peers,
    /// The gateway's own service name, never routed to, so a request cannot loop.
    pub own_name: String,
}

pub fn app(state: Gateway) -> Router {
    Router::new()
        // The UI layer: the web service's app, whose requests come back here.
        .route("/", get(|| async { axum::response::Redirect::to("/web/") }))
        .route("/users/{id}/posts", get(user_posts))
        .route("/{service}", any(proxy))
        .route("/{service}/", any(proxy))
        .route("/{service}/{*rest}", any(proxy))
        .with_state(state)
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
    request: axum::extract::Request,
) -> Response {
    let service = params.first().map(|(_, v)| v.clone()).unwrap_or_default();
    // Spans name the route with the service in it: `/users/{*rest}`, not `/{service}/{*rest}`.
    let route = if params.len() > 1 {
        format!("/{service}/{{*rest}}")
    } else {
        format!("/{service}")
    };
    let mut response = forward(gw, service, route.clone(), uri, request)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(RouteName(route));
    response
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than the gateway's limit of {BODY_LIMIT} bytes"),
    )
}

/// A request body on its way to a service: small ones whole, so that the call may be sent again
/// on another instance; others as a stream, counted against the limit as they pass.
enum Outgoing {
    Whole(Bytes),
    Stream {
        body: Body,
        over_limit: Arc<AtomicBool>,
    },
}

async fn outgoing(body: Body) -> Result<Outgoing, ApiError> {
    use axum::body::HttpBody;
    match body.size_hint().exact() {
        Some(n) if n > BODY_LIMIT as u64 => Err(too_large()),
        Some(n) if n <= WHOLE_UP_TO as u64 => axum::body::to_bytes(body, WHOLE_UP_TO)
            .await
            .map(Outgoing::Whole)
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}"))),
        _ => {
            let over_limit = Arc::new(AtomicBool::new(false));
            let over = over_limit.clone();
            let chunks = body.into_data_stream().scan(0usize, move |seen, chunk| {
                let item = chunk.map_err(std::io::Error::other).and_then(|chunk| {
                    *seen += chunk.len();
                    if *seen > BODY_LIMIT {
                        over.store(true, Ordering::Relaxed);
                        Err(std::io::Error::other("the request body is over the limit"))
                    } else {
                        Ok(chunk)
                    }
                });
                std::future::ready(Some(item))
            });
            Ok(Outgoing::Stream {
                body: Body::from_stream(chunks),
                over_limit,
            })
        }
    }
}

async fn forward(
    gw: Gateway,
    service: String,
    route: String,
    uri: axum::http::Uri,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    if service == gw.own_name {
        let mut known = gw.peers.discovery().known_services();
        known.retain(|s| *s != gw.own_name);
        return Err(unknown_service(&service, &known));
    }
    let (parts, body) = request.into_parts();
    let (body, stream, over_limit) = match outgoing(body).await? {
        Outgoing::Whole(bytes) => (bytes, None, None),
        Outgoing::Stream { body, over_limit } => (Bytes::new(), Some(body), Some(over_limit)),
    };
    let request = PeerRequest {
        route,
        path_and_query: uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| uri.path().to_string()),
        service,
        method: parts.method,
        headers: end_to_end(&parts.headers, false),
        body,
    };
    match gw.peers.forward(request, stream).await {
        Err(_)
            if over_limit
                .as_ref()
                .is_some_and(|o| o.load(Ordering::Relaxed)) =>
        {
            Err(too_large())
        }
        Err(e) => Err(gw.failure(e)),
        Ok(answer) => {
            let mut response = Response::new(answer.body);
            *response.status_mut() = answer.status;
            let mut headers = end_to_end(&answer.headers, true);
            // The answer carries the gateway's own server span, set by the kit.
            headers.remove("traceparent");
            *response.headers_mut() = headers;
            Ok(response)
        }
    }
}

impl Gateway {
    /// The answer to a call that failed: an unknown service is named among those this gateway
    /// routes to.
    fn failure(&self, e: PeerError) -> ApiError {
        match e {
            PeerError::Discovery(DiscoveryError::Unknown { service, known }) => {
                let known: Vec<String> =
                    known.into_iter().filter(|s| *s != self.own_name).collect();
                unknown_service(&service, &known)
            }
            e => e.into(),
        }
    }
}

/// The proxy path takes what `proxy` would: `/{service}…` for any service but the gateway's own,
/// except `GET /health` (the kit's), which goes to the router, as does a service name written
/// with escapes. It also answers `GET /users/{id}/posts` as `user_posts` would, without the full
/// server; that route's other methods are the router's (a 405).
impl msctl_kit::proxy::Proxy for Gateway {
    fn route(&self, method: &Method, path: &str) -> Option<Route> {
        let rest = path.strip_prefix('/')?;
        let (service, tail) = match rest.split_once('/') {
            Some((service, tail)) => (service, tail),
            None => (rest, ""),
        };
        if service.is_empty()
            || service.contains('%')
            || service == self.own_name
            || path == "/health"
        {
            return None;
        }
        if service == "users"
            && let Some(id) = tail.strip_suffix("/posts")
            && !id.is_empty()
            && !id.contains('/')
        {
            if !matches!(*method, Method::GET | Method::HEAD) || id.contains('%') {
                return None;
            }
            let (gw, id) = (self.clone(), id.to_string());
            return Some(Route::Answer {
                route: "/users/{id}/posts".into(),
                answer: Box::pin(async move {
                    compose_user_posts(&gw, &id)
                        .await
                        .unwrap_or_else(IntoResponse::into_response)
                }),
            });
        }
        // As the router names them: `/users/{*rest}` when there is a rest, `/users` otherwise.
        let route = if tail.is_empty() {
            format!("/{service}")
        } else {
            format!("/{service}/{{*rest}}")
        };
        Some(Route::Relay {
            service: service.to_string(),
            route,
        })
    }

    fn failed(&self, e: PeerError) -> ApiError {
        self.failure(e)
    }
}

/// `GET /users/{id}/posts`: the user and their posts, asked of both services at once.
async fn user_posts(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    compose_user_posts(&gw, &id).await
}

/// The answer to `GET /users/{id}/posts`, on either path.
async fn compose_user_posts(gw: &Gateway, id: &str) -> Result<Response, ApiError> {
    let id = parse_id(id, "user id")?;
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
    let user = match &user {
        Ok(answer) if answer.status.is_success() => answer,
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
    // Both answers are checked and passed on as the JSON they are, never rebuilt as values: the
    // composition is two copies of bytes.
    let user = serde_json::from_slice::<&RawValue>(&user.body).map_err(|e| {
        users_failed(
            StatusCode::BAD_GATEWAY,
            format!("answered with a body that is not JSON: {e}"),
        )
    })?;
    let posts = posts.as_ref().map_err(Clone::clone).and_then(|answer| {
        if !answer.status.is_success() {
            return Err(PeerError::BadAnswer {
                service: "posts".into(),
                message: format!("answered {}", answer.status),
            });
        }
        #[derive(serde::Deserialize)]
        struct Page<'a> {
            #[serde(borrow)]
            posts: Option<&'a RawValue>,
        }
        let page: Page =
            serde_json::from_slice(&answer.body).map_err(|e| PeerError::BadAnswer {
                service: answer.instance.clone(),
                message: format!(
                    "answered {} with a body that is not JSON: {e}",
                    answer.status
                ),
            })?;
        match page.posts {
            Some(list) if list.get().starts_with('[') => Ok(list),
            _ => Err(PeerError::BadAnswer {
                service: "posts".into(),
                message: "the answer has no `posts` list".into(),
            }),
        }
    });
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        user: &'a RawValue,
        posts: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        partial: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        errors: Option<serde_json::Value>,
    }
    let answer = match posts {
        Ok(list) => Answer {
            user,
            posts: Some(list),
            partial: None,
            errors: None,
        },
        Err(e) => Answer {
            user,
            posts: None,
            partial: Some(true),
            errors: Some(
                json!([{"service": "posts", "code": msctl_kit::error::code_for(e.status()), "message": e.to_string()}]),
            ),
        },
    };
    Ok(msctl_kit::server::json_answer(
        msctl_kit::server::json_bytes(&answer)?,
    ))
}

fn users_failed(status: StatusCode, why: String) -> ApiError {
    ApiError::new(
        status,
        msctl_kit::error::code_for(status),
        format!("users failed: {why}"),
    )
}
