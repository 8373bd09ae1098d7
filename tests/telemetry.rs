//! The supervisor's OTLP receiver and span store, with the real `msctl` and real services: spans
//! from any OpenTelemetry exporter join `msctl trace`, only with the token, and are forwarded to
//! the collector named in msctl's own environment.

mod common;

use common::{Receiver, TestProject, call_json, http, services_of, trace_spans, wait_until};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;

fn one_service() -> TestProject {
    TestProject::new(
        r#"
[services.users]
command = ["{bin}/users"]
"#,
    )
}

/// A span as a Python or Node SDK would export it, in protobuf.
fn foreign_span(trace_id: [u8; 16]) -> Vec<u8> {
    let string = |s: &str| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(s.into())),
        })
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: string("billing-py"),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: trace_id.to_vec(),
                    span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
                    name: "GET /invoices".into(),
                    kind: 2,
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_050_000_000,
                    attributes: vec![KeyValue {
                        key: "http.route".into(),
                        value: string("/invoices"),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[test]
fn spans_from_any_exporter_join_msctl_trace_with_the_token_only() {
    let p = one_service();
    p.up();
    let reg = p.registry().unwrap();
    let url = format!(
        "http://{}/v1/traces",
        reg["supervisor"]["control"].as_str().unwrap()
    );
    let token = reg["supervisor"]["otlp_token"]
        .as_str()
        .unwrap()
        .to_string();
    let trace_id = [0xab; 16];
    let post = |token: Option<&str>| {
        let mut req = http()
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(foreign_span(trace_id));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().unwrap().status().as_u16()
    };
    assert_eq!(post(None), 401);
    assert_eq!(post(Some("not-the-token")), 401);
    assert_eq!(post(Some(&token)), 200);
    let id = "ab".repeat(16);
    let spans: Vec<Value> = p.wait_until("the posted span", |p| {
        let spans = trace_spans(p, &id)?;
        (!spans.is_empty()).then_some(spans)
    });
    assert_eq!(spans[0]["name"], "GET /invoices");
    assert_eq!(spans[0]["resource"]["service.name"], "billing-py");
    assert_eq!(spans[0]["attributes"]["http.route"], "/invoices");
    // The receiver still takes the kit's own spans after a malformed body.
    let bad = http()
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/x-protobuf")
        .body(vec![0xff, 0xff, 0xff])
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let answer = call_json(&p, &["--service", "users", "/users/1"]);
    let id = answer["trace_id"].as_str().unwrap().to_string();
    let services: HashSet<String> = p.wait_until("both spans of the call", |p| {
        let out = p.msctl().args(["trace", &id, "--json"]).output().unwrap();
        let spans: Value = serde_json::from_slice(&out.stdout).ok()?;
        let names: HashSet<String> = spans
            .as_array()?
            .iter()
            .filter_map(|s| s["resource"]["service.name"].as_str().map(str::to_string))
            .collect();
        (names.len() == 2).then_some(names)
    });
    assert_eq!(
        services,
        HashSet::from(["msctl".to_string(), "users".to_string()])
    );
    // Nothing is written beside the store any more.
    assert!(p.path().join(".msctl/telemetry.db").exists());
}

#[test]
fn what_msctl_receives_is_forwarded_to_the_collector_in_its_own_environment() {
    let collector = Receiver::start(vec![]);
    let p = one_service();
    let out = p
        .msctl()
        .args(["up", "-d"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The services are pointed at msctl, never straight at the collector.
    let pid = p.pid_of("users-1").unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains(&collector.url),
        "the service bypasses msctl"
    );
    let answer = call_json(&p, &["--service", "users", "/users/2"]);
    let id = answer["trace_id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(10), "the forwarded spans", || {
        let bodies = collector.bodies();
        let text: String = bodies
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect();
        (text.contains(&id)
            && text.contains("\"stringValue\":\"users\"")
            && text.contains("\"stringValue\":\"msctl\""))
        .then_some(())
    });
    // And they are kept locally as well.
    let out = p.msctl().args(["trace", &id, "--json"]).output().unwrap();
    let spans: Value = serde_json::from_slice(&out.stdout).unwrap();
    // msctl's root, users' server span and its query.
    assert_eq!(spans.as_array().unwrap().len(), 3, "{spans:#}");
}

/// Scaffolds `name` from the built-in `template` (a service in another language on its stock
/// OpenTelemetry SDK) depending on users, brings the system up through its build step, calls
/// it through the gateway, and checks the trace: msctl → gateway → `name` → users, each span
/// parented correctly. Returns the project and the trace id.
fn polyglot_trace(template: &str, name: &str) -> (TestProject, String) {
    let p = TestProject::new(
        r#"
[services.users]
command = ["{bin}/users"]

[services.gateway]
command = ["{bin}/gateway"]
"#,
    );
    let out = p
        .msctl()
        .args(["scaffold", name, "--template", template, "--dep", "users"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its build step installs the stock SDK into its own folder, from PyPI or npm.
    let out = p.msctl().args(["up", "-d"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(p.path().join(".msctl/build.log")).unwrap_or_default()
    );
    let answer = call_json(&p, &[&format!("{name}/hello")]);
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"]["users"]["id"], 1);
    let id = answer["trace_id"].as_str().unwrap().to_string();
    let spans: Vec<Value> = p.wait_until("the whole trace", |p| {
        let spans = trace_spans(p, &id)?;
        (spans.len() >= 6).then_some(spans)
    });
    let by_id = |span_id: &str| spans.iter().find(|s| s["spanId"] == span_id);
    let of = |service: &str, kind: u64| {
        spans
            .iter()
            .find(|s| s["resource"]["service.name"] == service && s["kind"] == kind)
            .unwrap_or_else(|| panic!("no {service} span of kind {kind} in {spans:#?}"))
    };
    let parent_of = |s: &Value| {
        s["parentSpanId"]
            .as_str()
            .and_then(by_id)
            .unwrap_or_else(|| panic!("the parent of {s} is not in the trace"))
    };
    let server = of(name, 2);
    assert_eq!(server["name"], format!("GET /{name}/hello"));
    assert_eq!(parent_of(server)["resource"]["service.name"], "gateway");
    // Instrumentations may put spans of their own (a framework's handler) between the server
    // span and the call: the call has the server span among its ancestors, in its service.
    let client = of(name, 3);
    let mut up = parent_of(client);
    while up["spanId"] != server["spanId"] {
        assert_eq!(up["resource"]["service.name"], name, "{up}");
        up = parent_of(up);
    }
    assert_eq!(parent_of(of("users", 2))["spanId"], client["spanId"]);
    assert_eq!(
        parent_of(of("gateway", 2))["resource"]["service.name"],
        "msctl"
    );
    let out = p.msctl().args(["trace", &id]).output().unwrap();
    let waterfall = String::from_utf8_lossy(&out.stdout);
    assert!(
        waterfall.contains(&format!("{name} GET /{name}/hello")),
        "{waterfall}"
    );
    (p, id)
}

#[test]
fn a_scaffolded_python_service_on_the_stock_opentelemetry_sdk_joins_the_trace() {
    let (p, id) = polyglot_trace("python", "billing");
    // Log records from the Python SDK and from the kit, joined to the trace, in time order.
    let logs = p.wait_until("the trace's log records", |p| {
        let out = p.msctl().args(["logs", "--trace", &id]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.contains("asking users") && text.matches(" request ").count() >= 2).then_some(text)
    });
    let asking = logs.find("asking users").unwrap();
    let users_request = logs.find("users-1").unwrap();
    assert!(
        asking < users_request,
        "billing asks before users answers:\n{logs}"
    );
    assert!(logs.contains("billing-1"), "{logs}");
    // Under their spans with `trace --logs`.
    let out = p.msctl().args(["trace", &id, "--logs"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let logs_section = text.split("\nLOGS\n").nth(1).unwrap_or_default();
    let mut lines = logs_section.lines();
    assert!(lines.any(|l| l == "billing GET /billing/hello"), "{text}");
    assert!(
        lines.next().unwrap_or_default().contains("asking users"),
        "{text}"
    );
}

#[test]
fn top_shows_rate_errors_and_latency_per_service_and_route() {
    let p = TestProject::new(
        r#"
[services.users]
command = ["{bin}/users"]
restart = "no"

[services.gateway]
command = ["{bin}/gateway"]
depends_on = ["users"]
"#,
    );
    p.up();
    for _ in 0..10 {
        p.msctl().args(["call", "users/1"]).assert().success();
    }
    p.msctl().args(["stop", "users"]).assert().success();
    for _ in 0..4 {
        p.msctl().args(["call", "users/1"]).assert().code(11);
    }
    let rows: Vec<Value> = p.wait_until("every request in top", |p| {
        let out = p
            .msctl()
            .args(["top", "--json", "--window", "5m"])
            .output()
            .unwrap();
        let rows: Value = serde_json::from_slice(&out.stdout).ok()?;
        let rows = rows.as_array()?.clone();
        let gateway = rows.iter().find(|r| r["service"] == "gateway")?;
        (gateway["requests"] == 14).then_some(rows)
    });
    let row = |service: &str| rows.iter().find(|r| r["service"] == service).unwrap();
    let gateway = row("gateway");
    assert_eq!(gateway["route"], "GET /users/{*rest}");
    let rate = gateway["error_rate"].as_f64().unwrap();
    assert!((rate - 4.0 / 14.0).abs() < 1e-9, "{gateway}");
    let users = row("users");
    assert_eq!(
        (users["requests"].as_u64(), users["error_rate"].as_f64()),
        (Some(10), Some(0.0))
    );
    assert!(users["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(users["p99_ms"].as_f64().unwrap() >= users["p50_ms"].as_f64().unwrap());
    assert!((users["rps"].as_f64().unwrap() - 10.0 / 300.0).abs() < 1e-9);
    // Piped, it prints one table and ends.
    let out = p.msctl().args(["top"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("GET /users/{*rest}") && table.contains("28.6%"),
        "{table}"
    );
}

#[test]
fn a_scaffolded_node_service_on_the_stock_opentelemetry_sdk_joins_the_trace() {
    for tool in ["node", "npm"] {
        let found = std::process::Command::new(tool).arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "`{tool}` is needed for this test; on Debian: apt-get install nodejs npm"
        );
    }
    polyglot_trace("node", "orders");
}

#[test]
fn the_last_request_before_down_is_kept_whole() {
    let p = TestProject::new(
        r#"
[services.users]
command = ["{bin}/users"]

[services.gateway]
command = ["{bin}/gateway"]
depends_on = ["users"]
"#,
    );
    p.up();
    let answer = call_json(&p, &["users/1"]);
    let id = answer["trace_id"].as_str().unwrap().to_string();
    // At once: the services' batches are still waiting for their 100 ms tick.
    p.msctl().arg("down").assert().success();
    let spans = trace_spans(&p, &id).unwrap();
    let services: HashSet<&str> = services_of(&spans).into_iter().collect();
    assert_eq!(
        services,
        HashSet::from(["msctl", "gateway", "users"]),
        "{spans:#?}"
    );
    // msctl's root, the gateway's server and client spans, users' server span and its query.
    assert_eq!(spans.len(), 5, "{spans:#?}");
}

#[test]
fn a_handlers_log_events_carry_its_trace_and_rust_log_filters_them() {
    let p = TestProject::new(
        r#"
[services.users]
command = ["{bin}/users"]

[services.posts]
command = ["{bin}/posts"]
env = { RUST_LOG = "warn" }

[services.gateway]
command = ["{bin}/gateway"]
depends_on = ["users", "posts"]
env = { OTEL_LOGS_EXPORTER = "none" }
"#,
    );
    p.up();
    let out = p
        .msctl()
        .args([
            "call",
            "POST",
            "users",
            "-d",
            r#"{"name":"Ida","email":"ida.trace@example.com"}"#,
            "--json",
        ])
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["status"], 201, "{answer}");
    let id = answer["trace_id"].as_str().unwrap().to_string();
    // The handler's `tracing::info!` is a JSON line with the request's ids, joined to the trace.
    let logs = p.wait_until("the handler's event in the trace's logs", |p| {
        let out = p.msctl().args(["logs", "--trace", &id]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("user created").then_some(text)
    });
    assert!(
        logs.contains("users-1") && logs.contains("user_id="),
        "{logs}"
    );
    // The gateway runs with OTEL_LOGS_EXPORTER=none: it exports its spans, and its request line
    // stays in its instance log only.
    let spans = p.wait_until("the gateway's spans", |p| {
        let spans = common::trace_spans(p, &id)?;
        common::services_of(&spans)
            .contains(&"gateway")
            .then_some(spans)
    });
    assert!(common::services_of(&spans).contains(&"users"));
    let out = p.msctl().args(["logs", "--trace", &id]).output().unwrap();
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.contains("users-1") && !logs.contains("gateway-1"),
        "{logs}"
    );
    p.wait_until("the gateway's request line in its instance log", |p| {
        std::fs::read_to_string(p.path().join(".msctl/logs/gateway-1.log"))
            .ok()?
            .lines()
            .any(|l| l.contains(&id) && l.contains("\"request\""))
            .then_some(())
    });
    let line = p
        .log_text("users-1")
        .lines()
        .find(|l| l.contains("user created"))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .expect("the event is in the instance log");
    assert_eq!(line["trace_id"], id.as_str());
    assert_eq!(line["level"], "info");
    assert!(
        line["span_id"].as_str().is_some_and(|s| s.len() == 16),
        "{line}"
    );
    // posts runs with RUST_LOG=warn: its info events are not written.
    let out = p
        .msctl()
        .args([
            "call",
            "POST",
            "posts",
            "-d",
            r#"{"user_id":1,"title":"Hi","body":"..."}"#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    let posts_log = std::fs::read_to_string(p.path().join(".msctl/logs/posts-1.log")).unwrap();
    assert!(!posts_log.contains("post created"), "{posts_log}");
}
