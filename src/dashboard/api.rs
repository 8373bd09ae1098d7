//! The dashboard's JSON: the system with its figures, traces, logs, the service map and the
//! metrics series, read from the registry, the instance logs and the span store; the actions,
//! carried out as the CLI carries them; and a stream that tells open pages what changed.

use super::Dash;
use crate::telemetry::store::{Call, Filter, Store};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use msctl_contract::control::{Replicas, Request, Response as Answer};
use msctl_contract::registry::InstanceState;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

fn now_ns() -> u64 {
    msctl_contract::span::unix_nanos(SystemTime::now())
}

fn store(dash: &Dash) -> Option<Store> {
    Store::open_read(&dash.sup.project().telemetry_db())
}

/// The window the services' figures cover.
const FIGURES: Duration = Duration::from_secs(60);

/// Every instance, and per service its requests per second, error rate and p99 over the last
/// minute.
pub async fn overview(State(dash): State<Dash>) -> Json<Value> {
    let registry = dash.sup.store().snapshot();
    let spans = store(&dash)
        .and_then(|s| {
            s.server_spans_since(now_ns() - FIGURES.as_nanos() as u64)
                .ok()
        })
        .unwrap_or_default();
    // Weighted: a span of a sampled trace stands for several requests.
    let mut by_service: BTreeMap<&str, Vec<(u64, f64)>> = BTreeMap::new();
    let mut errors: HashMap<&str, f64> = HashMap::new();
    for s in &spans {
        by_service
            .entry(&s.service)
            .or_default()
            .push((s.duration_ns, s.weight));
        if s.error {
            *errors.entry(&s.service).or_default() += s.weight;
        }
    }
    let now_ms = now_ns() / 1_000_000;
    let usage = crate::supervisor::process::usage_by_group();
    let services: Vec<Value> = registry
        .services
        .iter()
        .map(|(name, entry)| {
            let figures = by_service.get(name.as_str()).map(|d| {
                let mut d = d.clone();
                let total: f64 = d.iter().map(|d| d.1).sum();
                let p99 = crate::cmd::top::percentile(&mut d, 99.0).unwrap_or_default();
                json!({
                    "rps": total / FIGURES.as_secs_f64(),
                    "error_rate": errors.get(name.as_str()).copied().unwrap_or(0.0) / total,
                    "p99_ms": p99 as f64 / 1e6,
                })
            });
            let instances: Vec<Value> = entry
                .instances
                .iter()
                .map(|i| {
                    let used = i
                        .pid
                        .filter(|_| i.state != InstanceState::Stopped)
                        .and_then(|pid| usage.get(&pid));
                    json!({
                        "id": i.id,
                        "pid": i.pid,
                        "address": i.address,
                        "state": i.state.to_string(),
                        "uptime_ms": i.pid.map(|_| now_ms.saturating_sub(i.started_at_ms)),
                        "restarts": i.restarts,
                        "cpu_ms": used.map(|u| u.cpu.as_millis() as u64),
                        "rss_bytes": used.map(|u| u.rss_bytes),
                        "health": i.reason.clone().or_else(|| i.last_health.clone()),
                    })
                })
                .collect();
            json!({
                "name": name,
                "instances": instances,
                "figures": figures,
                "build_failed": entry.build_failed.as_ref().map(|b| &b.error),
            })
        })
        .collect();
    Json(json!({
        "project": registry.supervisor.project,
        "phase": registry.supervisor.phase,
        "watching": registry.supervisor.watching,
        "services": services,
    }))
}

/// `msctl traces`, as JSON: `service`, `route`, `errors`, `limit`.
pub async fn traces(
    State(dash): State<Dash>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let filter = Filter {
        service: q.get("service").filter(|s| !s.is_empty()).cloned(),
        route: q.get("route").filter(|s| !s.is_empty()).cloned(),
        errors: q.get("errors").is_some_and(|v| v == "true" || v == "1"),
        min_duration_ns: 0,
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(50usize)
        .min(500);
    let (list, _) = crate::traces::list(dash.sup.project(), &filter, limit);
    Json(Value::Array(list.iter().map(|t| t.summary()).collect()))
}

/// One trace in waterfall order: each span with its depth, whether it is on the critical path
/// or an orphan, its attributes and events; and the trace's log records.
pub async fn trace(State(dash): State<Dash>, Path(id): Path<String>) -> Response {
    let project = dash.sup.project();
    let trace = match crate::traces::find(project, &id) {
        Ok(t) => t,
        Err(e) => return (StatusCode::NOT_FOUND, e).into_response(),
    };
    let critical = crate::waterfall::critical_path(&trace);
    let start = trace.start();
    let rows: Vec<Value> = crate::waterfall::ordered(&trace)
        .into_iter()
        .map(|(s, depth, orphan)| {
            json!({
                "span_id": s.span_id,
                "parent_span_id": s.parent_span_id,
                "name": s.name,
                "kind": s.kind,
                "service": s.resource.service_name,
                "instance": s.resource.service_instance_id,
                "start_ms": s.start_time_unix_nano.saturating_sub(start) as f64 / 1e6,
                "duration_ms": s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e6,
                "error": s.status.code == 2,
                "status_message": s.status.message,
                "attributes": s.attributes,
                "events": s.events,
                "depth": depth,
                "orphan": orphan,
                "critical": critical.contains(&s.span_id),
            })
        })
        .collect();
    let logs: Vec<Value> = crate::traces::logs_of(project, &trace.id)
        .iter()
        .map(|l| {
            json!({
                "time_ms": l.time_unix_nano.saturating_sub(start) as f64 / 1e6,
                "severity": l.severity,
                "body": l.body,
                "instance": l.resource.service_instance_id,
                "span_id": l.span_id,
                "attributes": l.attributes,
            })
        })
        .collect();
    Json(json!({
        "summary": trace.summary(),
        "spans": rows,
        "logs": logs,
    }))
    .into_response()
}

/// The newest log lines of every instance (or of `service`), parsed: JSON lines become their
/// fields, other lines a message. `level` and `q` (text) filter them.
pub async fn logs(
    State(dash): State<Dash>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let services: Vec<String> = q
        .get("service")
        .filter(|s| !s.is_empty())
        .cloned()
        .into_iter()
        .collect();
    let level = q
        .get("level")
        .filter(|s| !s.is_empty())
        .map(|l| l.to_lowercase());
    let text = q
        .get("q")
        .filter(|s| !s.is_empty())
        .map(|t| t.to_lowercase());
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(300usize)
        .min(2000);
    let mut lines: Vec<Value> = Vec::new();
    for (instance, path) in crate::cmd::logs::instance_logs(dash.sup.project(), &services) {
        // The newest lines are what a page shows; older ones stay in the file.
        let (tail, _) = crate::supervisor::logs::last_lines(&path, limit);
        for line in tail.iter().map(String::as_str) {
            let (stamp, raw) = crate::supervisor::logs::split_stamp(line);
            let mut fields = match serde_json::from_str::<Value>(raw) {
                Ok(Value::Object(map)) => map,
                _ => {
                    let mut map = serde_json::Map::new();
                    map.insert("msg".into(), raw.into());
                    map
                }
            };
            fields.insert("instance".into(), instance.clone().into());
            // A line that does not say when it was written is placed by when msctl read it.
            if !fields.contains_key("ts_ms")
                && let Some(ms) = stamp.and_then(crate::supervisor::logs::stamp_millis)
            {
                fields.insert("ts_ms".into(), ms.into());
            }
            let line_level = fields
                .get("level")
                .and_then(Value::as_str)
                .unwrap_or("info")
                .to_lowercase();
            if level.as_ref().is_some_and(|l| *l != line_level) {
                continue;
            }
            if text
                .as_ref()
                .is_some_and(|t| !raw.to_lowercase().contains(t.as_str()))
            {
                continue;
            }
            lines.push(Value::Object(fields));
        }
    }
    lines.sort_by_key(|l| l.get("ts_ms").and_then(Value::as_u64).unwrap_or(0));
    let skip = lines.len().saturating_sub(limit);
    Json(Value::Array(lines.split_off(skip)))
}

/// Services as nodes and calls as edges over the last `minutes` (default 5): each edge with
/// its calls per second and error rate. Events go from the publisher through the subject to
/// each consumer.
pub async fn map(
    State(dash): State<Dash>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let window = window(&q);
    let calls = store(&dash)
        .and_then(|s| s.calls_since(now_ns() - window.as_nanos() as u64).ok())
        .unwrap_or_default();
    let services: Vec<String> = dash
        .sup
        .store()
        .snapshot()
        .services
        .keys()
        .cloned()
        .collect();
    Json(map_of(&services, &calls, window))
}

/// The map from calls: pure, for tests.
pub fn map_of(services: &[String], calls: &[Call], window: Duration) -> Value {
    // Calls and failed calls, each as many as its span stands for (a sampled trace's weight).
    let mut edges: BTreeMap<(String, String, &str), (f64, f64)> = BTreeMap::new();
    let mut nodes: Vec<String> = services.to_vec();
    let mut add = |from: &str, to: &str, kind: &'static str, c: &Call| {
        let e = edges
            .entry((from.to_string(), to.to_string(), kind))
            .or_default();
        e.0 += c.weight;
        if c.error {
            e.1 += c.weight;
        }
    };
    for c in calls {
        match (c.kind, &c.peer, &c.subject, c.operation.as_deref()) {
            (3, Some(peer), _, _) => add(&c.service, peer, "http", c),
            (4, _, Some(subject), Some("send") | Some("publish")) => {
                add(&c.service, &format!("bus:{subject}"), "publish", c)
            }
            (5, _, Some(subject), _) => add(&format!("bus:{subject}"), &c.service, "consume", c),
            _ => {}
        }
    }
    for (from, to, _) in edges.keys() {
        for n in [from, to] {
            if !nodes.contains(n) {
                nodes.push(n.clone());
            }
        }
    }
    let secs = window.as_secs_f64();
    json!({
        "window_s": secs,
        "nodes": nodes.iter().map(|n| json!({
            "id": n,
            "kind": if n.starts_with("bus:") { "subject" } else { "service" },
        })).collect::<Vec<_>>(),
        "edges": edges.iter().map(|((from, to, kind), (n, errors))| json!({
            "from": from,
            "to": to,
            "kind": kind,
            "calls": n.round() as u64,
            "rps": n / secs,
            "error_rate": errors / n,
        })).collect::<Vec<_>>(),
    })
}

fn window(q: &HashMap<String, String>) -> Duration {
    let minutes = q
        .get("minutes")
        .and_then(|m| m.parse::<u64>().ok())
        .unwrap_or(5)
        .clamp(1, 24 * 60);
    Duration::from_secs(minutes * 60)
}

/// Per service and route, requests per second and p50/p99 latency in buckets over the last
/// `minutes` (default 5): 60 buckets.
pub async fn metrics(
    State(dash): State<Dash>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let window = window(&q);
    let now = now_ns();
    let since = now - window.as_nanos() as u64;
    let spans = store(&dash)
        .and_then(|s| s.server_spans_timed(since).ok())
        .unwrap_or_default();
    Json(series(&spans, since, now))
}

/// The charts' series from timed server spans: pure, for tests.
pub fn series(spans: &[(u64, crate::telemetry::store::ServerSpan)], since: u64, now: u64) -> Value {
    const BUCKETS: u64 = 60;
    let width = ((now - since) / BUCKETS).max(1);
    // Per route, per bucket: each span's duration and the requests it stands for.
    type Buckets = Vec<Vec<(u64, f64)>>;
    let mut groups: BTreeMap<(&str, &str), Buckets> = BTreeMap::new();
    for (start, s) in spans {
        let b = ((start.saturating_sub(since)) / width).min(BUCKETS - 1) as usize;
        groups
            .entry((&s.service, &s.name))
            .or_insert_with(|| vec![Vec::new(); BUCKETS as usize])[b]
            .push((s.duration_ns, s.weight));
    }
    let times: Vec<f64> = (0..BUCKETS)
        .map(|b| (since + b * width) as f64 / 1e9)
        .collect();
    // Weighted: a span of a sampled trace stands for several requests.
    let pct = |d: &mut Vec<(u64, f64)>, p: f64| -> Option<f64> {
        crate::cmd::top::percentile(d, p * 100.0).map(|ns| ns as f64 / 1e6)
    };
    let series: Vec<Value> = groups
        .into_iter()
        .map(|((service, route), mut buckets)| {
            json!({
                "service": service,
                "route": route,
                "rps": buckets.iter().map(|b| b.iter().fold(0.0, |sum, d| sum + d.1) / (width as f64 / 1e9)).collect::<Vec<_>>(),
                "p50_ms": buckets.iter_mut().map(|b| pct(b, 0.5)).collect::<Vec<_>>(),
                "p99_ms": buckets.iter_mut().map(|b| pct(b, 0.99)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "times": times, "series": series })
}

/// Server-sent events: a `change` whenever the registry, the newest trace or the logs moved,
/// checked every 250 ms, so that open pages fetch what changed without a reload.
pub async fn live(
    State(dash): State<Dash>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let stream = futures_util::stream::unfold((dash, None::<String>), |(dash, last)| async move {
        loop {
            let now = fingerprint(&dash);
            if last.as_ref() != Some(&now) {
                let event = Event::default().event("change").data(now.clone());
                return Some((Ok(event), (dash, Some(now))));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// What a page would refetch for: the registry, the span store, the logs folder.
fn fingerprint(dash: &Dash) -> String {
    let project = dash.sup.project();
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .map(|t| format!("{t:?}"))
            .unwrap_or_default()
    };
    let logs: u64 = std::fs::read_dir(project.logs_dir())
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let mut wal = project.telemetry_db().into_os_string();
    wal.push("-wal");
    format!(
        "{}|{}|{}|{logs}",
        stamp(&project.registry()),
        stamp(&project.telemetry_db()),
        stamp(std::path::Path::new(&wal))
    )
}

/// An action on a service, as the CLI does it: `restart`, `stop`, `start`, `kill`, or
/// `scale?replicas=N`. The answer is the outcome, in words.
pub async fn action(
    State(dash): State<Dash>,
    Path((name, action)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !dash.sup.config().services.contains_key(&name) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"ok": false, "message": format!("no service `{name}`")})),
        )
            .into_response();
    }
    let request = match action.as_str() {
        "restart" => Request::Restart {
            service: name.clone(),
        },
        "stop" => Request::Stop {
            service: name.clone(),
        },
        "start" => Request::Start {
            services: vec![name.clone()],
        },
        "scale" => match q.get("replicas").and_then(|r| r.parse::<u32>().ok()) {
            Some(n) => Request::Scale {
                service: name.clone(),
                replicas: Replicas::To(n),
            },
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"ok": false, "message": "scale needs ?replicas=N"})),
                )
                    .into_response();
            }
        },
        "kill" => {
            let registry = dash.sup.store().snapshot();
            let pids: Vec<(String, u32)> = registry
                .services
                .get(&name)
                .map(|e| {
                    e.instances
                        .iter()
                        .filter_map(|i| Some((i.id.clone(), i.pid?)))
                        .collect()
                })
                .unwrap_or_default();
            for (_, pid) in &pids {
                // The process alone, as a crash: the supervisor handles it by its policy.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let ids: Vec<String> = pids.into_iter().map(|(id, _)| id).collect();
            if ids.is_empty() {
                let message = format!("{name} has no running instance");
                return (
                    StatusCode::CONFLICT,
                    Json(json!({"ok": false, "message": message})),
                )
                    .into_response();
            }
            let message = format!("killed {}", ids.join(", "));
            return Json(json!({"ok": true, "message": message})).into_response();
        }
        other => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"ok": false, "message": format!("no action `{other}`")})),
            )
                .into_response();
        }
    };
    match dash.sup.handle(request).await {
        Answer::Failed(f) => {
            use msctl_contract::control::FailureKind;
            // As a client of any HTTP API would read it: the request's fault, or the system's.
            let status = match f.kind {
                FailureKind::UnknownService => StatusCode::NOT_FOUND,
                FailureKind::Usage => StatusCode::UNPROCESSABLE_ENTITY,
                FailureKind::Busy => StatusCode::CONFLICT,
                FailureKind::Refused => StatusCode::BAD_REQUEST,
                FailureKind::Config | FailureKind::Start | FailureKind::Unrecorded => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            };
            (status, Json(json!({"ok": false, "message": f.message}))).into_response()
        }
        _ => Json(json!({"ok": true, "message": format!("{name}: {action} done")})).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::store::ServerSpan;

    fn call(
        service: &str,
        kind: u8,
        peer: Option<&str>,
        subject: Option<&str>,
        op: Option<&str>,
        error: bool,
    ) -> Call {
        Call {
            service: service.into(),
            kind,
            peer: peer.map(Into::into),
            subject: subject.map(Into::into),
            operation: op.map(Into::into),
            error,
            weight: 1.0,
        }
    }

    #[test]
    fn the_map_has_an_edge_per_caller_and_callee_with_its_rate() {
        let calls = vec![
            call("gateway", 3, Some("users"), None, None, false),
            call("gateway", 3, Some("users"), None, None, true),
            call("gateway", 3, Some("posts"), None, None, false),
            call(
                "users",
                4,
                None,
                Some("user.deleted"),
                Some("create"),
                false,
            ),
            call("users", 4, None, Some("user.deleted"), Some("send"), false),
            call(
                "posts",
                5,
                None,
                Some("user.deleted"),
                Some("process"),
                false,
            ),
        ];
        let services = vec![
            "gateway".to_string(),
            "posts".into(),
            "users".into(),
            "nats".into(),
        ];
        let map = map_of(&services, &calls, Duration::from_secs(10));
        let edges = map["edges"].as_array().unwrap();
        let edge = |from: &str, to: &str| {
            edges
                .iter()
                .find(|e| e["from"] == from && e["to"] == to)
                .unwrap_or_else(|| panic!("{from} → {to}: {edges:?}"))
        };
        assert_eq!(edge("gateway", "users")["calls"], 2);
        assert_eq!(edge("gateway", "users")["error_rate"], 0.5);
        assert_eq!(edge("gateway", "users")["rps"], 0.2);
        assert_eq!(edge("users", "bus:user.deleted")["kind"], "publish");
        assert_eq!(edge("bus:user.deleted", "posts")["kind"], "consume");
        assert_eq!(edges.len(), 4, "the create span is not a call");
        let nodes: Vec<&str> = map["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            nodes,
            ["gateway", "posts", "users", "nats", "bus:user.deleted"]
        );

        // A call in a trace sampled at one in four counts as four.
        let mut sampled = call("gateway", 3, Some("posts"), None, None, true);
        sampled.weight = 4.0;
        let map = map_of(
            &services,
            &[calls[2].clone(), sampled],
            Duration::from_secs(10),
        );
        let edge = &map["edges"][0];
        assert_eq!(
            (edge["calls"].as_u64(), edge["rps"].as_f64()),
            (Some(5), Some(0.5))
        );
        assert_eq!(edge["error_rate"], 0.8);
    }

    #[test]
    fn series_bucket_requests_and_latency_over_time() {
        let s = |start: u64, ms: u64| {
            (
                start,
                ServerSpan {
                    service: "users".into(),
                    name: "GET /users/{id}".into(),
                    duration_ns: ms * 1_000_000,
                    error: false,
                    weight: 1.0,
                },
            )
        };
        // 60 s in 60 buckets of 1 s; two requests in the first second, one in the last.
        let since = 1_000_000_000_000;
        let spans = vec![
            s(since + 1, 2),
            s(since + 2, 10),
            s(since + 59_500_000_000, 4),
        ];
        let v = series(&spans, since, since + 60_000_000_000);
        let one = &v["series"][0];
        assert_eq!(one["rps"][0], 2.0);
        assert_eq!(one["rps"][59], 1.0);
        assert_eq!(one["p50_ms"][0], 2.0);
        assert_eq!(one["p99_ms"][0], 10.0);
        assert_eq!(one["p50_ms"][30], Value::Null);
        assert_eq!(v["times"].as_array().unwrap().len(), 60);
    }
}
