//! The gateway as a streaming proxy: answers pass through as they arrive, never held whole, and
//! request bodies stream with a limit. Upstreams are real servers on loopback; so is the gateway.
//! This file is its own test process, and its tests take turns, so that the growth of its peak
//! memory during the 10 MB test is that test's doing.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use futures_util::StreamExt;
use msctl_kit::testing::{kit, kit_with_timeout, spawn, spawn_proxy};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

const CHUNK: usize = 64 * 1024;
/// 10 MB, in chunks made as they are sent.
const BIG_CHUNKS: usize = 160;

/// Held by each test for its whole run.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Fails the test, rather than hang it, if `f` takes longer than a generous bound.
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen"))
}

/// Serves `app` as service `files` and a gateway in front of it; the gateway's base URL.
async fn through_gateway(app: Router, peer_timeout: Option<Duration>) -> String {
    let upstream = spawn(&kit("files", &[]), app).await;
    let vars = [("FILES_URL", upstream)];
    let k = match peer_timeout {
        Some(t) => kit_with_timeout("gateway", &vars, t),
        None => kit("gateway", &vars),
    };
    let app = gateway::app(gateway::Gateway {
        peers: k.peers.clone(),
        own_name: "gateway".into(),
    });
    let state = gateway::Gateway {
        peers: k.peers.clone(),
        own_name: "gateway".into(),
    };
    spawn_proxy(&k, app, state).await
}

/// The process's peak resident memory, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs is readable");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM is listed");
    kib * 1024
}

#[tokio::test]
async fn a_10_mb_answer_passes_through_without_being_held_whole() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let app = Router::new().route(
        "/files/big",
        get(|| async {
            let chunks = futures_util::stream::iter(0..BIG_CHUNKS)
                .map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![(i % 251) as u8; CHUNK])));
            Body::from_stream(chunks)
        }),
    );
    let gw = through_gateway(app, None).await;
    let before = peak_rss();
    let response = reqwest::get(format!("{gw}/files/big")).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut seen = 0usize;
    while let Some(chunk) = bounded("the next chunk", body.next()).await {
        let chunk = chunk.expect("the body arrives whole");
        for (i, byte) in chunk.iter().enumerate() {
            assert_eq!(
                *byte as usize,
                ((seen + i) / CHUNK) % 251,
                "byte {}",
                seen + i
            );
        }
        seen += chunk.len();
    }
    assert_eq!(seen, BIG_CHUNKS * CHUNK);
    let grew = peak_rss().saturating_sub(before);
    assert!(
        grew < 5 * 1024 * 1024,
        "peak memory grew by {grew} bytes while 10 MB passed through: it was held, not streamed"
    );
}

#[tokio::test]
async fn a_trickling_answer_reaches_the_client_as_it_comes() {
    let _turn = ONE_AT_A_TIME.lock().await;
    // The upstream sends its second part only once the client has the first: a gateway that
    // waited for the whole body would never deliver it.
    let go_on = Arc::new(Notify::new());
    let upstream_go_on = go_on.clone();
    let app = Router::new().route(
        "/files/slow",
        get(move || {
            let go_on = upstream_go_on.clone();
            async move {
                let parts = futures_util::stream::unfold(0, move |n| {
                    let go_on = go_on.clone();
                    async move {
                        match n {
                            0 => Some((Ok::<_, std::io::Error>(Bytes::from("first,")), 1)),
                            1 => {
                                go_on.notified().await;
                                Some((Ok(Bytes::from("second")), 2))
                            }
                            _ => None,
                        }
                    }
                });
                Body::from_stream(parts)
            }
        }),
    );
    let gw = through_gateway(app, None).await;
    let response = reqwest::get(format!("{gw}/files/slow")).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = bounded("the first part", body.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"first,");
    go_on.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = bounded("the second part", body.next()).await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(rest, b"second");
}

#[tokio::test]
async fn an_answer_that_stalls_mid_body_is_cut_after_the_timeout() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let app = Router::new().route(
        "/files/stall",
        get(|| async {
            let parts = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from("part"))])
                .chain(futures_util::stream::pending());
            Body::from_stream(parts)
        }),
    );
    let gw = through_gateway(app, Some(Duration::from_millis(300))).await;
    let response = reqwest::get(format!("{gw}/files/stall")).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = bounded("the first part", body.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"part");
    let end = bounded("the cut", body.next()).await;
    assert!(
        matches!(end, Some(Err(_))),
        "the client sees the body fail, not end as if whole: {end:?}"
    );
}

/// An upstream that counts the calls it gets and answers with the length of the body it read.
fn counting_upstream() -> (Router, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let app = Router::new().route(
        "/files/upload",
        post(move |body: Body| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                bytes.len().to_string()
            }
        }),
    );
    (app, calls)
}

/// A request body of `len` bytes sent as a stream, so that no length is known in advance.
fn streamed_body(len: usize) -> reqwest::Body {
    let chunks = (0..len.div_ceil(CHUNK))
        .map(move |i| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; CHUNK.min(len - i * CHUNK)])));
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn request_bodies_stream_within_the_limit_and_are_refused_past_it() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (app, calls) = counting_upstream();
    let gw = through_gateway(app, None).await;
    let client = reqwest::Client::new();
    let url = format!("{gw}/files/upload");

    // Under the limit, streamed with no length: passed on whole.
    let ok = client
        .post(&url)
        .body(streamed_body(700 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), (700 * 1024).to_string());

    // A stated length over the limit: refused before any call is made.
    let before = calls.load(Ordering::SeqCst);
    let big = vec![b'x'; gateway::BODY_LIMIT + 1];
    let refused = client.post(&url).body(big).send().await.unwrap();
    assert_eq!(refused.status(), 413);
    let error: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "payload_too_large", "{error}");
    assert_eq!(calls.load(Ordering::SeqCst), before, "no call was made");

    // No stated length, and more than the limit: cut where it passes the limit.
    let cut = client
        .post(&url)
        .body(streamed_body(gateway::BODY_LIMIT + 3 * CHUNK))
        .send()
        .await
        .unwrap();
    assert_eq!(cut.status(), 413);
    let error: serde_json::Value = cut.json().await.unwrap();
    assert_eq!(error["error"]["code"], "payload_too_large", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&gateway::BODY_LIMIT.to_string()),
        "{error}"
    );
}
