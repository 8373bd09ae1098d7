//! Deadlines that propagate (docs/resilience.md): a request may carry its caller's remaining
//! budget in `msctl-timeout-ms`; every call made while serving it ends by then, and passes on
//! what is left. So a slow service far down never holds a request past its first caller's
//! budget.

use axum::http::{HeaderMap, HeaderValue};
use std::future::Future;
use tokio::time::Instant;

/// The header: the caller's remaining budget, in whole milliseconds.
pub const HEADER: &str = "msctl-timeout-ms";

tokio::task_local! {
    static DEADLINE: Option<Instant>;
}

/// The deadline a request's header gives, if it has a valid one.
pub fn from_headers(headers: &HeaderMap) -> Option<Instant> {
    let ms: u64 = headers.get(HEADER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Instant::now() + std::time::Duration::from_millis(ms))
}

/// Runs `work` (the handling of one request) under `deadline`.
pub async fn within<F: Future>(deadline: Option<Instant>, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}

/// `own`, or the deadline of the request being served if that is sooner.
pub fn bound(own: Instant) -> Instant {
    match DEADLINE.try_with(|d| *d).ok().flatten() {
        Some(request) => own.min(request),
        None => own,
    }
}

/// Tells the callee how long it has: the time left until `deadline`.
pub fn inject(deadline: Instant, headers: &mut HeaderMap) {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    headers.insert(HEADER, HeaderValue::from(left as u64));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, get};
    use crate::{Kit, PeerRequest};
    use axum::Router;
    use axum::extract::State;
    use axum::http::StatusCode;
    use std::time::Duration;

    #[tokio::test]
    async fn a_callers_budget_bounds_the_calls_made_for_it_and_is_passed_on() {
        // The slow service takes 2 s and says what budget it was given.
        let slow = Router::new().route(
            "/slow",
            axum::routing::get(|headers: HeaderMap| async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                headers
                    .get(HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_string()
            }),
        );
        let slow_url = testing::spawn(&testing::kit("slow", &[]), slow).await;
        let echo = Router::new().route(
            "/echo",
            axum::routing::get(|headers: HeaderMap| async move {
                headers
                    .get(HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_string()
            }),
        );
        let echo_url = testing::spawn(&testing::kit("echo", &[]), echo).await;
        let kit: Kit = testing::kit("front", &[("SLOW_URL", slow_url), ("ECHO_URL", echo_url)]);
        let app = Router::new()
            .route(
                "/via-slow",
                axum::routing::get(|State(kit): State<Kit>| async move {
                    match kit
                        .peers
                        .send(PeerRequest::get("slow", "/slow", "/slow"))
                        .await
                    {
                        Ok(_) => StatusCode::OK,
                        Err(e) => e.status(),
                    }
                }),
            )
            .route(
                "/via-echo",
                axum::routing::get(|State(kit): State<Kit>| async move {
                    let answer = kit
                        .peers
                        .send(PeerRequest::get("echo", "/echo", "/echo"))
                        .await
                        .unwrap();
                    String::from_utf8_lossy(&answer.body).into_owned()
                }),
            )
            .with_state(kit.clone());
        // The peer timeout is 2 s; the caller allows 300 ms, and that is what counts.
        let started = Instant::now();
        let mut req = get("/via-slow");
        req.headers_mut().insert(HEADER, HeaderValue::from(300u64));
        let (status, _, _) = testing::call(&kit, app.clone(), req).await;
        assert_eq!(status, 504);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        // What is left goes on to the next service.
        let mut req = get("/via-echo");
        req.headers_mut().insert(HEADER, HeaderValue::from(900u64));
        let res = tower::ServiceExt::oneshot(kit.router(app.clone()), req)
            .await
            .unwrap();
        let body = axum::body::to_bytes(res.into_body(), 100).await.unwrap();
        let passed: u64 = String::from_utf8_lossy(&body).parse().unwrap();
        assert!(passed <= 900 && passed > 500, "{passed}");
        // Without a budget from its caller, a call has its own timeout, and says so onward.
        let res = tower::ServiceExt::oneshot(kit.router(app), get("/via-echo"))
            .await
            .unwrap();
        let body = axum::body::to_bytes(res.into_body(), 100).await.unwrap();
        let passed: u64 = String::from_utf8_lossy(&body).parse().unwrap();
        assert!(passed <= 2000 && passed > 1500, "{passed}");
    }
}
