//! Structured log lines on stdout: one JSON object a line, so `msctl logs` and scripts can parse
//! them; and, where an OTLP endpoint is set, the same lines exported as OTLP log records, so that
//! `msctl logs --trace` joins them to their trace.

use crate::otlp::LogLine;
use crate::span::OtlpTarget;
use serde_json::{Map, Value, json};
use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

static IDENTITY: OnceLock<(String, String)> = OnceLock::new();
static EXPORT: OnceLock<mpsc::Sender<ToExporter>> = OnceLock::new();

enum ToExporter {
    Line(LogLine),
    Flush(oneshot::Sender<()>),
}

/// Lines that may wait for the exporter; past this a burst drops lines, never a request's time.
const QUEUE: usize = 8192;
/// Lines in one request, at most.
const BATCH: usize = 512;

/// Exports every later line to `target` as OTLP log records, from a background task. Must run
/// inside a Tokio runtime; only the first call counts.
pub fn export_to(target: OtlpTarget) {
    let (tx, rx) = mpsc::channel(QUEUE);
    if EXPORT.set(tx).is_ok() {
        tokio::spawn(export(target, rx));
    }
}

/// Sends every line written so far, waiting at most `limit`: a service calls it as it exits.
pub async fn flush(limit: Duration) {
    let Some(tx) = EXPORT.get() else { return };
    let (ack, done) = oneshot::channel();
    let flushed = async {
        if tx.send(ToExporter::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    };
    let _ = tokio::time::timeout(limit, flushed).await;
}

async fn export(target: OtlpTarget, mut rx: mpsc::Receiver<ToExporter>) {
    let Ok(client) = reqwest::Client::builder().no_proxy().build() else {
        return;
    };
    let (service, instance) = IDENTITY.get().cloned().unwrap_or_default();
    let mut batch: Vec<LogLine> = Vec::new();
    let mut tick = tokio::time::interval(target.every);
    loop {
        let mut flushed = None;
        let (due, closed) = tokio::select! {
            msg = rx.recv() => match msg {
                Some(ToExporter::Line(line)) => {
                    batch.push(line);
                    (batch.len() >= BATCH, false)
                }
                Some(ToExporter::Flush(ack)) => {
                    flushed = Some(ack);
                    (true, false)
                }
                None => (true, true),
            },
            _ = tick.tick() => (true, false),
        };
        if due && !batch.is_empty() {
            let body = crate::otlp::logs_protobuf(&service, &instance, &batch);
            // A failed export loses these lines; they are still on stdout and in msctl's logs.
            let _ = crate::otlp::post(&client, &target.url, &target.headers, body, 2).await;
            batch.clear();
        }
        if let Some(ack) = flushed {
            let _ = ack.send(());
        }
        if closed {
            return;
        }
    }
}

/// Names every later line with the service and instance; called once by the kit at start.
pub fn init(service: &str, instance: &str) {
    let _ = IDENTITY.set((service.to_string(), instance.to_string()));
}

/// Writes one line at `level` with `msg` and any extra `fields` (a JSON object).
pub fn line(level: &str, msg: &str, fields: Value) {
    let mut obj = Map::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    obj.insert("ts_ms".into(), json!(now.as_millis() as u64));
    obj.insert("level".into(), json!(level));
    if let Some((service, instance)) = IDENTITY.get() {
        obj.insert("service".into(), json!(service));
        obj.insert("instance".into(), json!(instance));
    }
    obj.insert("msg".into(), json!(msg));
    let extra = match fields {
        Value::Object(extra) => extra,
        _ => Map::new(),
    };
    if let Some(tx) = EXPORT.get() {
        // A full queue drops the line from the export only: never a request's time.
        let _ = tx.try_send(ToExporter::Line(LogLine {
            time_unix_nano: now.as_nanos() as u64,
            level: level.to_string(),
            msg: msg.to_string(),
            fields: extra.clone(),
        }));
    }
    obj.extend(extra);
    let mut out = std::io::stdout().lock();
    // A closed stdout (the supervisor went away) must not take the service down with it.
    let _ = writeln!(out, "{}", Value::Object(obj));
}

pub fn info(msg: &str, fields: Value) {
    line("info", msg, fields);
}

pub fn warn(msg: &str, fields: Value) {
    line("warn", msg, fields);
}

pub fn error(msg: &str, fields: Value) {
    line("error", msg, fields);
}
