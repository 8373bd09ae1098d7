//! Structured log lines on stdout: one JSON object a line, so `msctl logs` and scripts can parse them.

use serde_json::{Map, Value, json};
use std::io::Write;
use std::sync::OnceLock;

static IDENTITY: OnceLock<(String, String)> = OnceLock::new();

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
    if let Value::Object(extra) = fields {
        obj.extend(extra);
    }
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
