//! The gateway's proxy path on the wire: what a client sends and gets back byte for byte, over
//! loopback, against instances that are real servers (the kit's) or raw TCP ones that answer as
//! a misbehaving or plain HTTP/1.1 server would.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::get;
use msctl_kit::testing::{kit, spawn, spawn_proxy};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The gateway in front of `url` as service `echo`; its address.
async fn gateway_to(url: String) -> String {
    let k = kit("gateway", &[("ECHO_URL", url)]);
    let state = gateway::Gateway {
        peers: k.peers.clone(),
        own_name: "gateway".into(),
    };
    let base = spawn_proxy(&k, gateway::app(state.clone()), state).await;
    base.trim_start_matches("http://").to_string()
}

/// An `echo` instance on the kit: `/echo/{word}` answers the word.
async fn echo() -> String {
    let app = Router::new()
        .route(
            "/echo/{word}",
            get(|axum::extract::Path(w): axum::extract::Path<String>| async move { w }),
        )
        .route(
            "/echo/fail/plain",
            get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/echo/fail/chunked",
            get(|| async {
                let parts = futures_util::stream::iter(
                    ["bo", "om"].map(|p| Ok::<_, std::io::Error>(Bytes::from(p))),
                );
                (
                    axum::http::StatusCode::BAD_GATEWAY,
                    Body::from_stream(parts),
                )
            }),
        )
        .route(
            "/echo/big",
            get(|| async {
                Body::from(
                    (0..10_000_000u32)
                        .map(|i| (i % 251) as u8)
                        .collect::<Vec<u8>>(),
                )
            }),
        );
    spawn(&kit("echo", &[]), app).await
}

/// A raw instance: every connection gets `answer` to each request it sends, and is closed after
/// it when `close` is set.
async fn raw(answer: &'static str, close: bool) -> String {
    raw_counted(answer, close).await.0
}

/// As `raw`, also counting the connections it accepts.
async fn raw_counted(answer: &'static str, close: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if conn.write_all(answer.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, accepted)
}

/// Sends `bytes` on a new connection to `addr` and reads until the gateway closes it.
async fn exchange(addr: &str, bytes: &str) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(bytes.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
        .await
        .expect("the gateway closes the connection")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// What a client gets for one `GET /echo/x` (asking to close) through the gateway `gw`.
async fn get_once(gw: &str) -> String {
    exchange(
        gw,
        "GET /echo/x HTTP/1.1\r\nhost: g\r\nconnection: close\r\n\r\n",
    )
    .await
}

/// The status codes of the answers in `text`, in order.
fn statuses(text: &str) -> Vec<&str> {
    text.match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..(i + 12).min(text.len())])
        .filter(|code| code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

#[tokio::test]
async fn requests_on_one_connection_are_answered_in_order_across_both_paths() {
    let gw = gateway_to(echo().await).await;
    // Sent at once: two for the proxy path, one the app answers (and from which the full server
    // has the connection), and one more for the proxy, which the full server then passes on.
    let text = exchange(
        &gw,
        "GET /echo/one HTTP/1.1\r\nhost: g\r\n\r\n\
         GET /echo/two HTTP/1.1\r\nhost: g\r\n\r\n\
         GET / HTTP/1.1\r\nhost: g\r\n\r\n\
         GET /echo/three HTTP/1.1\r\nhost: g\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), ["200", "200", "303", "200"], "{text}");
    let one = text.find("\r\n\r\none").expect("one");
    let two = text.find("\r\n\r\ntwo").expect("two");
    let three = text.find("\r\n\r\nthree").expect("three");
    assert!(one < two && two < three, "{text}");
    assert!(text.contains("location: /web/"), "{text}");
}

#[tokio::test]
async fn a_client_that_says_close_gets_its_answer_then_the_close() {
    let gw = gateway_to(echo().await).await;
    let text = exchange(
        &gw,
        "GET /echo/bye HTTP/1.1\r\nhost: g\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), ["200"], "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nbye"), "{text}");
}

#[tokio::test]
async fn a_head_request_gets_the_length_and_no_body() {
    let gw = gateway_to(echo().await).await;
    let text = exchange(
        &gw,
        "HEAD /echo/hello HTTP/1.1\r\nhost: g\r\n\r\nGET /echo/after HTTP/1.1\r\nhost: g\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), ["200", "200"], "{text}");
    let (head, get) = text.split_at(text.rfind("HTTP/1.1 ").unwrap());
    assert!(head.contains("content-length: 5\r\n"), "{head}");
    assert!(
        head.ends_with("\r\n\r\n"),
        "no body after a HEAD's head: {head}"
    );
    assert!(get.ends_with("\r\n\r\nafter"), "{get}");
}

#[tokio::test]
async fn an_answer_without_a_length_passes_whole_and_ends_the_connection() {
    let instance = raw(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the close",
        true,
    )
    .await;
    let gw = gateway_to(instance).await;
    // The client asked to keep the connection; the body's end is the connection's.
    let text = exchange(&gw, "GET /echo/x HTTP/1.1\r\nhost: g\r\n\r\n").await;
    assert_eq!(statuses(&text), ["200"], "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nuntil the close"), "{text}");
}

#[tokio::test]
async fn a_kept_connection_the_instance_closed_does_not_fail_a_call() {
    // It answers with a length and closes without saying so, as a restarting server does: the
    // connection the gateway kept is dead when the next request comes.
    let instance = raw("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", true).await;
    let gw = gateway_to(instance).await;
    let mut conn = TcpStream::connect(&gw).await.unwrap();
    for i in 0..20 {
        conn.write_all(b"GET /echo/x HTTP/1.1\r\nhost: g\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\nok") {
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            assert!(
                n > 0,
                "request {i}: closed after {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n"),
            "request {i}: {text}"
        );
    }
}

#[tokio::test]
async fn an_error_answered_in_plain_text_is_made_the_json_error_shape() {
    let gw = gateway_to(echo().await).await;
    for (path, status, code) in [
        ("/echo/fail/plain", "500", "internal"),
        ("/echo/fail/chunked", "502", "bad_gateway"),
    ] {
        let text = exchange(
            &gw,
            &format!("GET {path} HTTP/1.1\r\nhost: g\r\nconnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(statuses(&text), [status], "{text}");
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        let json: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(json["error"]["message"], "boom", "{text}");
        assert_eq!(json["error"]["code"], code, "{text}");
        assert!(
            text.contains("content-type: application/json\r\n"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_malformed_request_is_refused_and_a_bad_answer_is_named() {
    let gw = gateway_to(raw("SSH-2.0-OpenSSH_9.2\r\n\r\n", false).await).await;
    let text = exchange(
        &gw,
        "GET /echo/x HTTP/1.1\r\nhost: g\r\nbad header line\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), ["400"], "{text}");
    let text = get_once(&gw).await;
    assert_eq!(statuses(&text), ["502"], "{text}");
    assert!(
        text.contains("does not speak HTTP/1.1 at http://127.0.0.1:"),
        "{text}"
    );
}

#[tokio::test]
async fn a_large_answer_with_a_length_arrives_whole() {
    let gw = gateway_to(echo().await).await;
    let body = reqwest::get(format!("http://{gw}/echo/big"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), 10_000_000);
    assert!(body.iter().enumerate().all(|(i, b)| *b as usize == i % 251));
}

#[tokio::test]
async fn an_interim_answer_is_not_passed_on_and_an_unasked_switch_is_a_bad_answer() {
    let early = raw(
        "HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        false,
    )
    .await;
    let text = get_once(&gateway_to(early).await).await;
    assert_eq!(statuses(&text), ["200"], "{text}");
    assert!(text.ends_with("\r\n\r\nok"), "{text}");
    let switching = raw(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
        false,
    )
    .await;
    let text = get_once(&gateway_to(switching).await).await;
    assert_eq!(statuses(&text), ["502"], "{text}");
    assert!(text.contains("switched protocols unasked"), "{text}");
}

#[tokio::test]
async fn a_client_that_leaves_mid_call_abandons_it_at_the_instance() {
    // An instance that takes the request and never answers; it reports when its connection from
    // the gateway closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (closed, mut seen_closed) = tokio::sync::mpsc::channel::<()>(1);
    let (arrived, mut seen_arrived) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf).await;
        arrived.send(()).await.unwrap();
        while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
        closed.send(()).await.unwrap();
    });
    // The call's own timeout is far away: only the client's leaving can end it soon.
    let k = msctl_kit::testing::kit_with_timeout(
        "gateway",
        &[("ECHO_URL", url)],
        Duration::from_secs(60),
    );
    let state = gateway::Gateway {
        peers: k.peers.clone(),
        own_name: "gateway".into(),
    };
    let gw = spawn_proxy(&k, gateway::app(state.clone()), state).await;
    let mut client = TcpStream::connect(gw.trim_start_matches("http://"))
        .await
        .unwrap();
    client
        .write_all(b"GET /echo/slow HTTP/1.1\r\nhost: g\r\n\r\n")
        .await
        .unwrap();
    seen_arrived
        .recv()
        .await
        .expect("the call reaches the instance");
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), seen_closed.recv())
        .await
        .expect("the gateway closes its connection to the instance when the client leaves");
}

#[tokio::test]
async fn an_answer_cut_short_by_the_instance_is_cut_short_for_the_client() {
    // A length of 100 promised and 5 bytes sent; a chunked body with no last chunk; one that
    // breaks off with a malformed chunk size. Each then closes.
    for (answer, passed) in [
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort",
            "\r\n\r\nshort",
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nshort\r\n",
            "5\r\nshort\r\n",
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nshort\r\nzz\r\n",
            "\r\n\r\n",
        ),
    ] {
        let gw = gateway_to(raw(answer, true).await).await;
        // The client asked to keep the connection: only its close says the body is incomplete.
        let text = exchange(&gw, "GET /echo/x HTTP/1.1\r\nhost: g\r\n\r\n").await;
        assert_eq!(statuses(&text), ["200"], "{answer:?}: {text}");
        assert!(
            text.ends_with(passed),
            "what came whole is passed on, then the close: {text:?}"
        );
        assert!(!text.contains("zz"), "a malformed chunk is not: {text}");
        // The gateway itself is unharmed.
        let text = exchange(
            &gw,
            "GET /nothing HTTP/1.1\r\nhost: g\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(statuses(&text), ["404"], "{text}");
    }
}

#[tokio::test]
async fn mangled_requests_never_take_the_gateway_down() {
    let gw = gateway_to(echo().await).await;
    let base: &[u8] = b"POST /echo/a?x=1 HTTP/1.1\r\nhost: g\r\ncontent-length: 5\r\nconnection: keep-alive\r\nx-a: b\r\n\r\nhelloGET /echo/b HTTP/1.1\r\nhost: g\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    // A fixed sequence of mutations (xorshift), so that a failure is the same every run.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for case in 0..400 {
        let mut bytes = base.to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % bytes.len();
            match next() % 4 {
                0 => bytes[at] = next() as u8,
                1 => bytes.insert(at, b"\r\n: \0%/?x"[(next() % 9) as usize]),
                2 => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at.max(1)),
            }
        }
        let mut conn = TcpStream::connect(&gw).await.unwrap();
        let _ = conn.write_all(&bytes).await;
        // The client gives up on what never completes: the gateway must simply cope.
        let _ = conn.shutdown().await;
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
        assert!(
            read.is_ok(),
            "case {case}: the gateway neither answered nor closed: {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let text = exchange(
        &gw,
        "GET /echo/still HTTP/1.1\r\nhost: g\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(text.ends_with("\r\n\r\nstill"), "{text}");
}

#[tokio::test]
async fn the_composed_route_is_answered_on_the_proxy_path_over_kept_connections() {
    let user = r#"{"id":1,"name":"Ada"}"#;
    let (users, to_users) = raw_counted(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 21\r\n\r\n{\"id\":1,\"name\":\"Ada\"}",
        false,
    )
    .await;
    // Chunked, with an extension and a trailer: read whole and unframed before it is combined.
    let (posts, to_posts) = raw_counted(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
         9;x=y\r\n{\"posts\":\r\n9\r\n[{\"id\":7}\r\n2\r\n]}\r\n0\r\nx-t: 1\r\n\r\n",
        false,
    )
    .await;
    let k = kit("gateway", &[("USERS_URL", users), ("POSTS_URL", posts)]);
    let state = gateway::Gateway {
        peers: k.peers.clone(),
        own_name: "gateway".into(),
    };
    // No app behind the proxy path: whatever it does not answer itself is the router's 404.
    let gw = spawn_proxy(&k, Router::new(), state.clone()).await;
    let gw = gw.trim_start_matches("http://");
    let text = exchange(
        gw,
        "GET /users/1/posts HTTP/1.1\r\nhost: g\r\n\r\n\
         HEAD /users/1/posts HTTP/1.1\r\nhost: g\r\n\r\n\
         GET /users/1/posts HTTP/1.1\r\nhost: g\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), ["200", "200", "200"], "{text}");
    let body = format!(r#"{{"user":{user},"posts":[{{"id":7}}]}}"#);
    assert_eq!(text.matches(&body).count(), 2, "{text}");
    let length = format!("content-length: {}\r\n", body.len());
    assert_eq!(
        text.matches(&length).count(),
        3,
        "HEAD says the length too: {text}"
    );
    assert_eq!(text.matches("\r\ndate: ").count(), 3, "{text}");
    assert!(text.ends_with(&body), "{text}");
    // Three calls to each, one after another, on one kept connection each.
    assert_eq!(to_users.load(Ordering::SeqCst), 1);
    assert_eq!(to_posts.load(Ordering::SeqCst), 1);

    // With the app behind it: other methods are the router's, and so is an escaped id.
    let gw = spawn_proxy(&k, gateway::app(state.clone()), state).await;
    let gw = gw.trim_start_matches("http://");
    let text = exchange(
        gw,
        "POST /users/1/posts HTTP/1.1\r\nhost: g\r\ncontent-length: 0\r\n\r\n\
         GET /users/%31/posts HTTP/1.1\r\nhost: g\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&text), ["405", "200"], "{text}");
    assert!(text.ends_with(&body), "{text}");
}
