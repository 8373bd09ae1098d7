//! Events between services through the message bus (NATS JetStream, which msctl runs as the
//! service `nats`): an outbox in the publisher's own database, relayed when the broker is up;
//! durable consumption applied once per event; the trace carried in the message headers.
//!
//! Nothing is lost: an event is written in the same transaction as the change it announces, and
//! leaves the outbox only once the broker has stored it. Nothing is applied twice: the broker
//! drops a re-sent event by its id (`Nats-Msg-Id`), and a consumer records each event id in its
//! own database in the transaction that applies it (docs/bus.md).

use crate::Discovery;
use crate::pool::Pool;
use opentelemetry::trace::TraceContextExt;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The service that is the broker, found through discovery like any other.
pub const BROKER: &str = "nats";
/// Outbox rows relayed in one go.
const RELAY_BATCH: usize = 256;
/// How long the broker keeps an event.
const KEEP_IN_STREAM: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a relayed event stays in the outbox, for `msctl events`-style inspection of the
/// database; then it is deleted, so the outbox does not grow without end.
const KEEP_RELAYED: Duration = Duration::from_secs(3600);
/// How often a relay or consumer with no broker looks again.
const RETRY: Duration = Duration::from_millis(250);

/// The tables the bus keeps in a service's database: what it must still publish, and what it
/// has applied.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS msctl_outbox (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    payload TEXT NOT NULL,
    traceparent TEXT,
    created_ns INTEGER NOT NULL,
    relayed_ns INTEGER
);
CREATE INDEX IF NOT EXISTS msctl_outbox_pending ON msctl_outbox (seq) WHERE relayed_ns IS NULL;
CREATE TABLE IF NOT EXISTS msctl_inbox (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    created_ns INTEGER,
    applied_ns INTEGER NOT NULL
);";

/// Creates the bus's tables in a service's database.
pub fn setup(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// The messaging attributes every bus span carries.
fn span(operation: &str, kind: &str, subject: &str, id: &str) -> tracing::Span {
    tracing::info_span!(
        "message",
        otel.name = %format_args!("{operation} {subject}"),
        otel.kind = kind,
        messaging.system = "nats",
        messaging.operation.type = operation,
        messaging.destination.name = subject,
        messaging.message.id = id,
    )
}

/// The `traceparent` of `span`'s context, or of the current one when tracing is off.
fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let cx = if cx.span().span_context().is_valid() {
        cx
    } else {
        opentelemetry::Context::current()
    };
    let mut headers = axum::http::HeaderMap::new();
    crate::trace_context::inject(&cx, &mut headers);
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn context_of(traceparent: Option<&str>) -> opentelemetry::Context {
    let mut headers = axum::http::HeaderMap::new();
    if let Some(value) = traceparent.and_then(|t| t.parse().ok()) {
        headers.insert("traceparent", value);
    }
    crate::trace_context::extract(&headers)
}

/// Writes an event into the outbox inside `tx`: it is published if and only if `tx` commits.
/// Its PRODUCER span (`create SUBJECT`) is a child of the current span. Returns the event id.
pub fn publish(
    tx: &Transaction,
    subject: &str,
    payload: &serde_json::Value,
) -> rusqlite::Result<String> {
    let id = crate::contract::trace_context::hex(&rand::random::<[u8; 16]>());
    let span = span("create", "producer", subject, &id);
    let traceparent = traceparent_of(&span);
    let payload = serde_json::json!({
        "id": id,
        "subject": subject,
        "created_ns": now_ns(),
        "data": payload,
    });
    tx.prepare_cached(
        "INSERT INTO msctl_outbox (id, subject, payload, traceparent, created_ns)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        id,
        subject,
        payload.to_string(),
        traceparent,
        now_ns() as i64
    ])?;
    Ok(id)
}

/// An event as a consumer receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub id: String,
    pub subject: String,
    /// When the publisher committed it.
    pub created_ns: u64,
    pub data: serde_json::Value,
}

impl Delivered {
    fn parse(subject: &str, payload: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        Some(Self {
            id: v["id"].as_str()?.to_string(),
            subject: subject.to_string(),
            created_ns: v["created_ns"].as_u64().unwrap_or(0),
            data: v["data"].clone(),
        })
    }
}

/// For a consumer, inside the transaction that applies `event`: records it as applied, and
/// says whether this is its first delivery. On `false` the event was applied before, and the
/// consumer changes nothing.
pub fn first_delivery(tx: &Transaction, event: &Delivered) -> rusqlite::Result<bool> {
    let seen: Option<i64> = tx
        .prepare_cached("SELECT 1 FROM msctl_inbox WHERE id = ?1")?
        .query_row([&event.id], |r| r.get(0))
        .optional()?;
    if seen.is_some() {
        return Ok(false);
    }
    tx.prepare_cached(
        "INSERT INTO msctl_inbox (id, subject, created_ns, applied_ns) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        event.id,
        event.subject,
        event.created_ns as i64,
        now_ns() as i64
    ])?;
    Ok(true)
}

/// The JetStream stream an event subject belongs to: its first token (`user.deleted` is in
/// `user`, which holds `user.>`).
pub fn stream_of(subject: &str) -> String {
    subject.split('.').next().unwrap_or(subject).to_string()
}

fn stream_config(stream: &str) -> async_nats::jetstream::stream::Config {
    async_nats::jetstream::stream::Config {
        name: stream.to_string(),
        subjects: vec![format!("{stream}.>")],
        storage: async_nats::jetstream::stream::StorageType::File,
        // Long enough to cover a relay that re-sends after a crash or a broker restart.
        duplicate_window: Duration::from_secs(600),
        // A development broker keeps a week of events, not all of them forever.
        max_age: KEEP_IN_STREAM,
        ..Default::default()
    }
}

/// The broker's address from discovery: `None` while it is not running (or not installed).
fn broker(discovery: &Discovery) -> Option<String> {
    let endpoint = discovery.resolve(BROKER).ok()?.into_iter().next()?;
    Some(endpoint.base_url.trim_start_matches("http://").to_string())
}

async fn connect(addr: &str) -> Option<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(1))
        .request_timeout(Some(Duration::from_secs(2)))
        // The client's own reconnection backs off up to 4 s by default; a broker msctl restarts
        // is back within a second, and events wait for every moment it is not found.
        .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 50).min(500)))
        .connect(format!("nats://{addr}"))
        .await
        .ok()
}

/// The relay: sends the outbox's events to the broker, oldest first, whenever it is up.
#[derive(Clone, Debug)]
pub struct Outbox {
    wake: Arc<Notify>,
}

impl Outbox {
    /// Starts relaying from `db`'s outbox through the broker `discovery` finds.
    pub fn start(db: Arc<Pool<Connection>>, discovery: Discovery) -> Self {
        let wake = Arc::new(Notify::new());
        tokio::spawn(relay(db, discovery, wake.clone()));
        Self { wake }
    }

    /// Tells the relay that a transaction holding events has committed.
    pub fn committed(&self) {
        self.wake.notify_one();
    }
}

async fn relay(db: Arc<Pool<Connection>>, discovery: Discovery, wake: Arc<Notify>) {
    loop {
        let Some(addr) = broker(&discovery) else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let Some(client) = connect(&addr).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let mut js = async_nats::jetstream::new(client);
        // A broker that died is noticed by its acks not coming: after 1 s, not the default 5.
        js.set_timeout(Duration::from_secs(1));
        let mut streams: HashSet<String> = HashSet::new();
        // Until the broker fails or moves (a restarted broker may listen on a new port).
        loop {
            let pending = pending(&db, RELAY_BATCH);
            let pending = match pending {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the outbox");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            if pending.is_empty() {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if broker(&discovery).as_deref() != Some(addr.as_str()) {
                    break;
                }
                continue;
            }
            match send(&js, &mut streams, &pending).await {
                Ok(()) => {
                    let seqs: Vec<i64> = pending.iter().map(|p| p.seq).collect();
                    if let Err(e) = mark_relayed(&db, &seqs) {
                        tracing::warn!(error = %e, "cannot mark events relayed; they will be sent again and dropped by the broker as duplicates");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, broker = %addr, "cannot relay events; retrying");
                    tokio::time::sleep(RETRY).await;
                    break;
                }
            }
        }
    }
}

struct Pending {
    seq: i64,
    id: String,
    subject: String,
    payload: String,
    traceparent: Option<String>,
}

fn pending(db: &Pool<Connection>, limit: usize) -> rusqlite::Result<Vec<Pending>> {
    let conn = db.get();
    // The limit written in: bound, it would make SQLite compile the statement at every run.
    let mut q = conn.prepare_cached(&format!(
        "SELECT seq, id, subject, payload, traceparent FROM msctl_outbox
         WHERE relayed_ns IS NULL ORDER BY seq LIMIT {limit}"
    ))?;
    let rows = q.query_map([], |r| {
        Ok(Pending {
            seq: r.get(0)?,
            id: r.get(1)?,
            subject: r.get(2)?,
            payload: r.get(3)?,
            traceparent: r.get(4)?,
        })
    })?;
    rows.collect()
}

fn mark_relayed(db: &Pool<Connection>, seqs: &[i64]) -> rusqlite::Result<()> {
    let mut conn = db.get();
    let tx = conn.transaction()?;
    {
        let mut q = tx.prepare_cached("UPDATE msctl_outbox SET relayed_ns = ?1 WHERE seq = ?2")?;
        let now = now_ns() as i64;
        for seq in seqs {
            q.execute(params![now, seq])?;
        }
        tx.prepare_cached(
            "DELETE FROM msctl_outbox WHERE relayed_ns IS NOT NULL AND relayed_ns < ?1",
        )?
        .execute([now - KEEP_RELAYED.as_nanos() as i64])?;
    }
    tx.commit()
}

/// Publishes `pending` and waits until the broker has stored every one: each in a `send` span,
/// a child of its `create` span, whose context travels in the message.
async fn send(
    js: &async_nats::jetstream::Context,
    streams: &mut HashSet<String>,
    pending: &[Pending],
) -> Result<(), String> {
    let mut acks = Vec::with_capacity(pending.len());
    for p in pending {
        let stream = stream_of(&p.subject);
        if !streams.contains(&stream) {
            js.get_or_create_stream(stream_config(&stream))
                .await
                .map_err(|e| format!("cannot create the stream `{stream}`: {e}"))?;
            streams.insert(stream);
        }
        let span = span("send", "producer", &p.subject, &p.id);
        // Fails only when tracing is off, and then there is no span to place.
        let _ = span.set_parent(context_of(p.traceparent.as_deref()));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", p.id.as_str());
        if let Some(tp) = traceparent_of(&span) {
            headers.insert("traceparent", tp.as_str());
        }
        let ack = js
            .publish_with_headers(p.subject.clone(), headers, p.payload.clone().into())
            .await
            .map_err(|e| e.to_string())?;
        acks.push((ack, span));
    }
    for (ack, span) in acks {
        let stored = ack.await.map_err(|e| e.to_string());
        if let Err(e) = &stored {
            span.context()
                .span()
                .set_status(opentelemetry::trace::Status::error(e.clone()));
        }
        stored?;
    }
    Ok(())
}

/// Consumes `subject` with the durable consumer `durable`, forever: each event is applied by
/// `apply` (on a blocking thread, inside a CONSUMER span that continues the publisher's trace)
/// and acknowledged once applied. An event whose `apply` fails is not acknowledged, and comes
/// again. Broker restarts and moves are followed.
pub fn consume<F>(discovery: Discovery, subject: &str, durable: &str, apply: F)
where
    F: Fn(&Delivered) -> Result<(), String> + Send + Sync + 'static,
{
    let apply = Arc::new(apply);
    let subject = subject.to_string();
    let durable = durable.to_string();
    tokio::spawn(async move {
        // Said once per outage, not every retry: a machine without a broker stays quiet.
        let mut said = false;
        loop {
            let (connected, why) =
                consume_once(&discovery, &subject, &durable, apply.clone()).await;
            if connected || !said {
                tracing::info!(subject = %subject, reason = %why, "consumer waiting for the broker");
            }
            said = !connected;
            tokio::time::sleep(RETRY).await;
        }
    });
}

async fn consume_once<F>(
    discovery: &Discovery,
    subject: &str,
    durable: &str,
    apply: Arc<F>,
) -> (bool, String)
where
    F: Fn(&Delivered) -> Result<(), String> + Send + Sync + 'static,
{
    use futures_util::StreamExt;
    let Some(addr) = broker(discovery) else {
        return (false, "no broker is running".into());
    };
    let Some(client) = connect(&addr).await else {
        return (false, format!("cannot connect to {addr}"));
    };
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(Duration::from_secs(1));
    let stream = match js
        .get_or_create_stream(stream_config(&stream_of(subject)))
        .await
    {
        Ok(s) => s,
        Err(e) => return (false, e.to_string()),
    };
    let consumer: async_nats::jetstream::consumer::PullConsumer = match stream
        .get_or_create_consumer(
            durable,
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(durable.to_string()),
                filter_subject: subject.to_string(),
                ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                // Messages a consumer had taken but not acknowledged when the broker died come
                // again after this long: short, as applying one takes milliseconds.
                ack_wait: Duration::from_secs(2),
                ..Default::default()
            },
        )
        .await
    {
        Ok(c) => c,
        Err(e) => return (false, e.to_string()),
    };
    let mut messages = match consumer.messages().await {
        Ok(m) => m,
        Err(e) => return (false, e.to_string()),
    };
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            // A broker that went away, or came back elsewhere, is found again.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if broker(discovery).as_deref() != Some(addr.as_str()) {
                    return (true, "the broker stopped or moved".into());
                }
                continue;
            }
        };
        let message = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => return (true, e.to_string()),
            None => return (true, "the message stream ended".into()),
        };
        let Some(event) = Delivered::parse(message.subject.as_str(), &message.payload) else {
            tracing::warn!(subject = %message.subject, "an event that is not msctl's JSON shape; acknowledged and dropped");
            let _ = message.ack().await;
            continue;
        };
        let traceparent = message
            .headers
            .as_ref()
            .and_then(|h| h.get("traceparent"))
            .map(|v| v.as_str().to_string());
        let span = span("process", "consumer", &event.subject, &event.id);
        // Fails only when tracing is off, and then there is no span to place.
        let _ = span.set_parent(context_of(traceparent.as_deref()));
        let apply = apply.clone();
        let in_span = span.clone();
        let applied = tokio::task::spawn_blocking(move || in_span.in_scope(|| apply(&event)))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        match applied {
            Ok(()) => {
                if let Err(e) = message.ack().await {
                    // Applied and recorded: when it comes again, it is skipped.
                    return (true, format!("cannot acknowledge: {e}"));
                }
            }
            Err(e) => {
                span.context()
                    .span()
                    .set_status(opentelemetry::trace::Status::error(e.clone()));
                tracing::warn!(parent: &span, error = %e, "applying an event failed; it will come again");
            }
        }
        drop(span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("t.db")).unwrap();
        setup(&conn).unwrap();
        (dir, conn)
    }

    #[test]
    fn an_event_is_in_the_outbox_only_if_its_transaction_commits() {
        let (_dir, mut conn) = db();
        let tx = conn.transaction().unwrap();
        publish(&tx, "user.deleted", &serde_json::json!({"id": 1})).unwrap();
        drop(tx);
        let tx = conn.transaction().unwrap();
        let id = publish(&tx, "user.deleted", &serde_json::json!({"id": 2})).unwrap();
        tx.commit().unwrap();
        let mut conn = Some(conn);
        let pool = Pool::open(1, || conn.take().ok_or(())).unwrap();
        let pending = pending(&pool, 10).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].id, id);
        let payload: serde_json::Value = serde_json::from_str(&pending[0].payload).unwrap();
        assert_eq!(payload["data"]["id"], 2);
        let event = Delivered::parse("user.deleted", pending[0].payload.as_bytes()).unwrap();
        assert_eq!(event.id, id);
        mark_relayed(&pool, &[pending[0].seq]).unwrap();
        assert!(super::pending(&pool, 10).unwrap().is_empty());
        // Relayed long ago: deleted when the next batch is marked.
        let count = |pool: &Pool<Connection>| -> i64 {
            pool.get()
                .query_row("SELECT COUNT(*) FROM msctl_outbox", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count(&pool), 1);
        pool.get()
            .execute("UPDATE msctl_outbox SET relayed_ns = 1", [])
            .unwrap();
        mark_relayed(&pool, &[]).unwrap();
        assert_eq!(count(&pool), 0);
    }

    #[test]
    fn a_redelivered_event_is_applied_once() {
        let (_dir, mut conn) = db();
        let event = Delivered {
            id: "e1".into(),
            subject: "user.deleted".into(),
            created_ns: 1,
            data: serde_json::json!({}),
        };
        let tx = conn.transaction().unwrap();
        assert!(first_delivery(&tx, &event).unwrap());
        tx.commit().unwrap();
        let tx = conn.transaction().unwrap();
        assert!(!first_delivery(&tx, &event).unwrap());
        // A delivery whose transaction rolled back was not applied: it counts as new again.
        let other = Delivered {
            id: "e2".into(),
            ..event.clone()
        };
        assert!(first_delivery(&tx, &other).unwrap());
        drop(tx);
        let tx = conn.transaction().unwrap();
        assert!(first_delivery(&tx, &other).unwrap());
    }

    #[test]
    fn streams_are_named_by_the_subjects_first_token() {
        assert_eq!(stream_of("user.deleted"), "user");
        assert_eq!(stream_of("order"), "order");
        assert_eq!(stream_config("user").subjects, ["user.>"]);
    }
}
