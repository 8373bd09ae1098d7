//! The supervisor's OTLP/HTTP receiver: `POST /v1/traces` and `/v1/logs`, protobuf or JSON,
//! gzip or not, with the ingest token as a bearer token. What it accepts goes to the store
//! through a bounded queue and one writer thread: a burst the store cannot keep up with is
//! dropped and counted, and never holds up the service that sent it.

use super::convert::{self, LogRecord};
use super::store::{Store, is_broken};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use msctl_contract::span::Span;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc as tokio_mpsc;

/// Batches that may wait for the writer; past this, new ones are dropped.
pub const QUEUE: usize = 256;
/// A request header (msctl's own, for `msctl call`): answer once the spans are stored, not
/// merely queued. Services never send it, so they are never held up.
pub const WAIT_STORED: &str = "msctl-wait-stored";
/// How long such a request waits for the store, at most.
const WAIT_STORED_LIMIT: Duration = Duration::from_secs(2);
/// Under load, the store commits at most this often.
const COMMIT_EVERY: Duration = Duration::from_millis(100);
/// A commit of this many rows or more means load: the next one waits for COMMIT_EVERY.
const LOAD_ROWS: usize = 256;
/// The largest request body taken, after decompression as before it.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// The counter `msctl traces` reports.
pub const DROPPED: &str = "dropped_spans";

enum Batch {
    Spans(Vec<Span>),
    Logs(Vec<LogRecord>),
    /// Answered once everything queued before it is stored.
    Flush(mpsc::Sender<()>),
}

/// The receiving end: where batches go, and how many were dropped.
#[derive(Clone)]
pub struct Intake {
    token: Arc<str>,
    queue: SyncSender<Batch>,
    dropped: Arc<AtomicU64>,
    forward: Option<tokio_mpsc::Sender<Vec<Span>>>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Intake")
    }
}

impl Intake {
    /// Opens the store at `db` in a writer thread of its own. With `forward` (an upstream
    /// `/v1/traces` URL), every span received is also sent there.
    pub fn start(db: PathBuf, token: String, forward: Option<String>) -> Self {
        Self::with_queue(db, token, forward, QUEUE)
    }

    pub fn with_queue(db: PathBuf, token: String, forward: Option<String>, queue: usize) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Batch>(queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        std::thread::Builder::new()
            .name("msctl-store".into())
            .spawn(move || write(db, rx, counted))
            .expect("the store thread starts");
        let forward = forward.map(|url| {
            let (ftx, frx) = tokio_mpsc::channel(QUEUE);
            tokio::spawn(super::export::forward(url, frx));
            ftx
        });
        Self {
            token: token.into(),
            queue: tx,
            dropped,
            forward,
        }
    }

    /// Queues a batch; `false` when the queue is full and it was dropped.
    fn submit(&self, batch: Batch) -> bool {
        let spans = match &batch {
            Batch::Spans(s) => s.len() as u64,
            Batch::Logs(_) | Batch::Flush(_) => 0,
        };
        match self.queue.try_send(batch) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(spans, Ordering::Relaxed);
                false
            }
        }
    }

    /// Waits, at most `limit`, until everything received so far is stored: the supervisor calls
    /// it last, after its services have sent their final spans.
    pub async fn flush(&self, limit: Duration) {
        let (ack, done) = mpsc::channel();
        let queue = self.queue.clone();
        let waited = tokio::task::spawn_blocking(move || {
            // A full queue is waited for here: nothing else is arriving any more.
            if queue.send(Batch::Flush(ack)).is_ok() {
                let _ = done.recv_timeout(limit);
            }
        });
        let _ = tokio::time::timeout(limit, waited).await;
    }

    /// `/v1/traces` and `/v1/logs`, for the supervisor's loopback server.
    pub fn routes(self) -> Router {
        Router::new()
            .route("/v1/traces", post(traces))
            .route("/v1/logs", post(logs))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self)
    }
}

/// Which files the store at `path` is now, the database and its WAL (which an open store always
/// has): device and inode of each, `None` for one that is not there. Deleting either under the
/// writer would leave it writing where no reader looks.
#[cfg(unix)]
fn identity(path: &std::path::Path) -> [Option<(u64, u64)>; 2] {
    use std::os::unix::fs::MetadataExt;
    let of = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    [of(path), of(std::path::Path::new(&wal))]
}

#[cfg(not(unix))]
fn identity(path: &std::path::Path) -> [Option<(u64, u64)>; 2] {
    [path.exists().then_some((0, 0)), None]
}

/// A new store at `path` in place of one deleted or replaced (set aside first when what is
/// there now is not a store). A failure is said once until a store opens again.
fn fresh_store(path: &std::path::Path, complained: &mut bool) -> Option<Store> {
    let opened = match Store::open(path) {
        Ok(fresh) => {
            say!(
                "msctl: the span store {} was deleted or replaced; storing in a new one",
                path.display()
            );
            Some(fresh)
        }
        Err(e) if is_broken(&e) => set_aside(path, &e),
        Err(e) => {
            if !*complained {
                say!("msctl: cannot open the span store {}: {e}", path.display());
            }
            None
        }
    };
    *complained = opened.is_none();
    opened
}

/// Moves a store that is no longer one to `<path>.broken` (its WAL and index are removed: they
/// belong to the file as it was), and opens a new one in its place.
fn set_aside(path: &std::path::Path, why: &rusqlite::Error) -> Option<Store> {
    let with = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    let _ = std::fs::rename(path, with(".broken"));
    for extra in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(with(extra));
    }
    match Store::open(path) {
        Ok(store) => {
            say!(
                "msctl: the span store {} could not be used ({why}); it is kept as {}, and a new one takes what comes",
                path.display(),
                with(".broken").display()
            );
            Some(store)
        }
        Err(e) => {
            say!("msctl: cannot open the span store {}: {e}", path.display());
            None
        }
    }
}

/// The writer thread: stores each batch, and the count of dropped spans at least once a second.
fn write(db: PathBuf, rx: mpsc::Receiver<Batch>, dropped: Arc<AtomicU64>) {
    // Another process (a `msctl traces` started at the same moment, an older msctl migrating
    // the file) may hold the file's lock while the store is set up: tried for a while before
    // the supervisor goes without one.
    let mut opened = Store::open(&db);
    for _ in 0..50 {
        match &opened {
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                std::thread::sleep(Duration::from_millis(100));
                opened = Store::open(&db);
            }
            _ => break,
        }
    }
    let mut store = match opened {
        Ok(s) => s,
        Err(e) => {
            say!("msctl: cannot open the span store {}: {e}", db.display());
            // Keep draining so that senders are answered and counted, not blocked.
            for batch in rx {
                match batch {
                    Batch::Spans(s) => {
                        dropped.fetch_add(s.len() as u64, Ordering::Relaxed);
                    }
                    Batch::Flush(ack) => {
                        let _ = ack.send(());
                    }
                    Batch::Logs(_) => {}
                }
            }
            return;
        }
    };
    let mut last_commit = Instant::now();
    let mut under_load = false;
    let mut opened_as = identity(&db);
    // Whether a failure to open a new store was said: said once, tried again every second.
    let mut complained = false;
    let mut store_failing = false;
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(batch) => Some(batch),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        // Under load, batches are gathered for up to COMMIT_EVERY into one transaction: each
        // commit rewrites every page it touched, and random trace ids touch many. Load shows as
        // a large last commit; otherwise (a developer calling by hand, a flush) it commits at
        // once, so that `msctl call` then `msctl trace last` finds the call.
        let (mut spans, mut logs, mut acks) = (Vec::new(), Vec::new(), Vec::new());
        let mut take = |batch: Batch, acks: &mut Vec<_>| match batch {
            Batch::Spans(s) => spans.extend(s),
            Batch::Logs(l) => logs.extend(l),
            Batch::Flush(ack) => acks.push(ack),
        };
        if let Some(batch) = first {
            take(batch, &mut acks);
        }
        let due = last_commit + COMMIT_EVERY;
        while under_load && acks.is_empty() {
            let Some(left) = due.checked_duration_since(Instant::now()) else {
                break;
            };
            match rx.recv_timeout(left) {
                Ok(batch) => take(batch, &mut acks),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        for batch in std::iter::from_fn(|| rx.try_recv().ok()).take(QUEUE) {
            take(batch, &mut acks);
        }
        // The file deleted (`rm -rf .msctl`) or replaced while msctl runs: what is stored from
        // now on goes to a store at the path, where `msctl traces` looks, not into the old file.
        if identity(&db) != opened_as
            && let Some(fresh) = fresh_store(&db, &mut complained)
        {
            store = fresh;
            opened_as = identity(&db);
        }
        if !spans.is_empty() || !logs.is_empty() {
            let mut stored = store.insert(&spans, &logs);
            // Overwritten or damaged under msctl: set aside, and a new store takes this batch.
            if let Err(e) = &stored
                && is_broken(e)
                && let Some(fresh) = set_aside(&db, e)
            {
                store = fresh;
                opened_as = identity(&db);
                stored = store.insert(&spans, &logs);
            }
            // Said when it starts failing (a full disk fails every batch) and when it ends.
            match (stored, store_failing) {
                (Err(e), false) => {
                    say!(
                        "msctl: cannot store telemetry: {e}; spans and logs are lost until it can"
                    );
                    store_failing = true;
                }
                (Ok(_), true) => {
                    say!("msctl: telemetry is stored again");
                    store_failing = false;
                }
                _ => {}
            }
            last_commit = Instant::now();
            under_load = spans.len() + logs.len() >= LOAD_ROWS;
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 && store.add(DROPPED, lost).is_err() {
            dropped.fetch_add(lost, Ordering::Relaxed);
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

/// How the body is encoded, from its Content-Type.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// Why a request was not taken: its status and a sentence saying so.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn refuse(status: StatusCode, message: String) -> Refusal {
    Refusal(status, message)
}

/// Checks the token, undoes gzip and picks the encoding; or the answer that refuses the request.
fn unwrap_body(
    intake: &Intake,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(Encoding, Vec<u8>), Refusal> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given != Some(&*intake.token) {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: msctl gives every instance it in OTEL_EXPORTER_OTLP_HEADERS"
                .into(),
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let encoding = match content_type.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content type `{other}`: send application/x-protobuf or application/json"),
            ));
        }
    };
    let bytes = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        None | Some("") | Some("identity") => body.to_vec(),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("bad gzip body: {e}")))?;
            if out.len() > MAX_BODY {
                return Err(refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is over {MAX_BODY} bytes unpacked"),
                ));
            }
            out
        }
        Some(other) => {
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content encoding `{other}`: send gzip or none"),
            ));
        }
    };
    Ok((encoding, bytes))
}

fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    encoding: Encoding,
    bytes: &[u8],
) -> Result<T, Refusal> {
    match encoding {
        Encoding::Protobuf => T::decode(bytes).map_err(|e| e.to_string()),
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    }
    .map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("not an OTLP export request: {e}"),
        )
    })
}

/// The export request a body holds, checked (token, encoding, size) and decoded; or the
/// answer that refuses it.
fn read_request<T: Message + Default + serde::de::DeserializeOwned>(
    intake: &Intake,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(Encoding, T), Refusal> {
    let (encoding, bytes) = unwrap_body(intake, headers, body)?;
    Ok((encoding, decode(encoding, &bytes)?))
}

/// A success answer in the request's encoding: an empty export response, or one that reports
/// the spans dropped because the store was behind.
fn accepted(encoding: Encoding, rejected_spans: u64) -> Response {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    let answer = ExportTraceServiceResponse {
        partial_success: (rejected_spans > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejected_spans as i64,
            error_message: "msctl's span store is behind; these spans were dropped".into(),
        }),
    };
    match encoding {
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            answer.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&answer).unwrap_or_else(|_| b"{}".to_vec()),
        )
            .into_response(),
    }
}

async fn traces(State(intake): State<Intake>, headers: HeaderMap, body: Bytes) -> Response {
    let (encoding, request): (_, ExportTraceServiceRequest) =
        match read_request(&intake, &headers, body) {
            Ok(read) => read,
            Err(refused) => return refused.into_response(),
        };
    let spans = convert::spans(request);
    let count = spans.len() as u64;
    if let Some(forward) = &intake.forward {
        // Forwarding is best effort: a slow upstream loses spans, never slows the service.
        let _ = forward.try_send(spans.clone());
    }
    let kept = count == 0 || intake.submit(Batch::Spans(spans));
    if kept && headers.contains_key(WAIT_STORED) {
        intake.flush(WAIT_STORED_LIMIT).await;
    }
    accepted(encoding, if kept { 0 } else { count })
}

async fn logs(State(intake): State<Intake>, headers: HeaderMap, body: Bytes) -> Response {
    let (encoding, request): (_, ExportLogsServiceRequest) =
        match read_request(&intake, &headers, body) {
            Ok(read) => read,
            Err(refused) => return refused.into_response(),
        };
    let records = convert::logs(request);
    if !records.is_empty() {
        intake.submit(Batch::Logs(records));
    }
    match encoding {
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            Vec::<u8>::new(),
        )
            .into_response(),
        Encoding::Json => ([(header::CONTENT_TYPE, "application/json")], "{}").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan};
    use tower::ServiceExt;

    const TOKEN: &str = "secret";

    fn request(service: &str, spans: usize) -> ExportTraceServiceRequest {
        let spans = (0..spans)
            .map(|i| ProtoSpan {
                trace_id: vec![7; 16],
                span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                name: format!("GET /{i}"),
                kind: 2,
                start_time_unix_nano: 1_000,
                end_time_unix_nano: 2_000,
                ..Default::default()
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(service.into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn post(body: Vec<u8>, content_type: &str, token: Option<&str>) -> Request<Body> {
        let mut r = Request::post("/v1/traces").header("content-type", content_type);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.body(Body::from(body)).unwrap()
    }

    /// An intake whose writer never runs, so its queue fills.
    fn stalled(queue: usize) -> (Intake, mpsc::Receiver<Batch>) {
        let (tx, rx) = mpsc::sync_channel(queue);
        let intake = Intake {
            token: TOKEN.into(),
            queue: tx,
            dropped: Arc::new(AtomicU64::new(0)),
            forward: None,
        };
        (intake, rx)
    }

    #[tokio::test]
    async fn protobuf_json_and_gzip_are_taken_with_the_token_only() {
        let (intake, rx) = stalled(16);
        let app = intake.routes();
        let proto = request("billing", 2).encode_to_vec();
        let res = app
            .clone()
            .oneshot(post(proto.clone(), "application/x-protobuf", Some(TOKEN)))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/x-protobuf");
        let json = serde_json::to_vec(&request("billing", 1)).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &json).unwrap();
        let mut req = post(gz.finish().unwrap(), "application/json", Some(TOKEN));
        req.headers_mut()
            .insert("content-encoding", "gzip".parse().unwrap());
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 200);
        for (body, token) in [(proto.clone(), None), (proto, Some("guess"))] {
            let res = app
                .clone()
                .oneshot(post(body, "application/x-protobuf", token))
                .await
                .unwrap();
            assert_eq!(res.status(), 401);
        }
        let batches: Vec<usize> = rx
            .try_iter()
            .map(|b| match b {
                Batch::Spans(s) => s.len(),
                Batch::Logs(_) | Batch::Flush(_) => 0,
            })
            .collect();
        assert_eq!(batches, [2, 1]);
    }

    #[tokio::test]
    async fn malformed_bodies_are_refused_and_the_receiver_goes_on() {
        let (intake, _rx) = stalled(16);
        let app = intake.routes();
        let cases = [
            (b"\xff\xff\xff".to_vec(), "application/x-protobuf", 400),
            (b"{\"resourceSpans\": 7}".to_vec(), "application/json", 400),
            (b"{}".to_vec(), "text/plain", 415),
        ];
        for (body, content_type, status) in cases {
            let res = app
                .clone()
                .oneshot(post(body, content_type, Some(TOKEN)))
                .await
                .unwrap();
            assert_eq!(res.status(), status, "{content_type}");
        }
        let mut req = post(b"not gzip".to_vec(), "application/json", Some(TOKEN));
        req.headers_mut()
            .insert("content-encoding", "gzip".parse().unwrap());
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 400);
        let ok = post(
            request("users", 1).encode_to_vec(),
            "application/x-protobuf",
            Some(TOKEN),
        );
        assert_eq!(app.oneshot(ok).await.unwrap().status(), 200);
    }

    #[tokio::test]
    async fn a_burst_past_the_queue_is_dropped_counted_and_answered_at_once() {
        let (intake, _rx) = stalled(2);
        let app = intake.clone().routes();
        let started = std::time::Instant::now();
        let mut rejected = Vec::new();
        for _ in 0..5 {
            let res = app
                .clone()
                .oneshot(post(
                    serde_json::to_vec(&request("users", 3)).unwrap(),
                    "application/json",
                    Some(TOKEN),
                ))
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            rejected.push(answer["partialSuccess"]["rejectedSpans"].clone());
        }
        // Two batches fit; the other three are dropped, reported to the sender, and counted.
        assert_eq!(
            rejected[..2],
            [serde_json::Value::Null, serde_json::Value::Null]
        );
        assert!(
            rejected[2..].iter().all(|r| r == 3 || r == "3"),
            "{rejected:?}"
        );
        assert_eq!(intake.dropped.load(Ordering::Relaxed), 9);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a full queue never blocks"
        );
    }

    #[tokio::test]
    async fn a_request_that_asks_is_answered_once_its_spans_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("telemetry.db");
        let app = Intake::start(db.clone(), TOKEN.into(), None).routes();
        let body = request("msctl", 1);
        let trace = convert::spans(body.clone())[0].trace_id.clone();
        let mut req = post(body.encode_to_vec(), "application/x-protobuf", Some(TOKEN));
        req.headers_mut()
            .insert(WAIT_STORED, axum::http::HeaderValue::from_static("1"));
        let res = app.oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        // No waiting here: the answer came after the store had it.
        let stored = Store::open_read(&db).unwrap().trace(&trace).unwrap();
        assert_eq!(stored.len(), 1);
    }

    #[tokio::test]
    async fn flush_returns_once_everything_before_it_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("telemetry.db");
        let intake = Intake::start(db.clone(), TOKEN.into(), None);
        for _ in 0..20 {
            let spans = convert::spans(request("users", 50));
            // Each batch reuses the ids: what counts is that the last one is written.
            assert!(intake.submit(Batch::Spans(spans)));
        }
        let last = convert::spans(request("posts", 3));
        let trace = last[0].trace_id.clone();
        assert!(intake.submit(Batch::Spans(last)));
        intake.flush(Duration::from_secs(10)).await;
        let stored = Store::open_read(&db).unwrap().trace(&trace).unwrap();
        assert_eq!(
            stored.len(),
            50,
            "the first batch's 50 spans of this trace id"
        );
    }

    #[test]
    fn the_writer_stores_what_arrives_and_the_count_of_what_was_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("telemetry.db");
        let intake = Intake::start(db.clone(), TOKEN.into(), None);
        intake.dropped.fetch_add(5, Ordering::Relaxed);
        let spans = convert::spans(request("users", 4));
        assert!(intake.submit(Batch::Spans(spans)));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let stored = Store::open_read(&db)
                .map(|s| {
                    (
                        s.trace(&"07".repeat(16)).unwrap_or_default().len(),
                        s.counter(DROPPED),
                    )
                })
                .unwrap_or_default();
            if stored == (4, 5) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "stored {stored:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
