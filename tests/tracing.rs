//! Tracing across services: `msctl call`, `traces`, `trace` and OTLP export, against the real
//! sample system.

mod common;

use common::{
    Receiver, TestProject, call_json, otlp_span_count, stdout_json, trace_spans, wait_until,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

fn sample_with(extra_env: &str, posts_restart: &str) -> TestProject {
    TestProject::new(&format!(
        r#"
[defaults]
env = {{ {extra_env} }}

[services.users]
command = ["{{bin}}/users"]

[services.posts]
command = ["{{bin}}/posts"]
restart = "{posts_restart}"

[services.gateway]
command = ["{{bin}}/gateway"]
depends_on = ["users", "posts"]
"#
    ))
}

/// The spans of trace `id`, once `count` of them have been flushed.
fn spans_of(p: &TestProject, id: &str, count: usize) -> Vec<Value> {
    p.wait_until(&format!("{count} spans of trace {id}"), |p| {
        let out = p.msctl().args(["trace", id, "--json"]).output().unwrap();
        let spans = serde_json::from_slice::<Value>(&out.stdout).ok()?;
        let spans = spans.as_array()?.clone();
        (spans.len() >= count).then_some(spans)
    })
}

#[test]
fn a_call_is_traced_through_every_service_with_correct_parents() {
    let p = sample_with("", "on-failure");
    p.up();
    let answer = call_json(&p, &["users/1/posts"]);
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["body"]["user"]["id"], 1);
    let id = answer["trace_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);

    // Straight after the call, `trace` waits for the services' writers: the whole trace is there.
    let out = p
        .msctl()
        .args(["trace", "last", "--json"])
        .output()
        .unwrap();
    // msctl, the gateway's server span and two client spans, users and posts with a query each.
    let at_once = stdout_json(&out);
    assert_eq!(at_once.as_array().unwrap().len(), 8, "{at_once:#}");
    let spans = spans_of(&p, &id, 8);
    assert_eq!(spans.len(), 8, "{spans:#?}");
    let by_id: HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["spanId"].as_str().unwrap(), s))
        .collect();
    let service = |s: &Value| s["resource"]["service.name"].as_str().unwrap().to_string();
    let find = |svc: &str, kind: u64, name: &str| {
        spans
            .iter()
            .find(|s| service(s) == svc && s["kind"] == kind && s["name"] == name)
            .unwrap_or_else(|| panic!("no {svc} span {name:?} of kind {kind}: {spans:#?}"))
    };
    let root = find("msctl", 3, "GET");
    let gateway = find("gateway", 2, "GET /users/{id}/posts");
    let to_users = find("gateway", 3, "GET /users/{id}");
    let to_posts = find("gateway", 3, "GET /posts");
    let users = find("users", 2, "GET /users/{id}");
    let posts = find("posts", 2, "GET /posts");
    // The handlers' own `tracing` spans for their SQLite statements, under their server spans.
    let users_query = find("users", 1, "SELECT users");
    let posts_query = find("posts", 1, "SELECT posts");
    for query in [users_query, posts_query] {
        assert_eq!(query["attributes"]["db.system.name"], "sqlite", "{query}");
        assert_eq!(
            query["attributes"]["db.operation.name"], "SELECT",
            "{query}"
        );
    }
    assert!(root.get("parentSpanId").is_none());
    for (child, parent) in [
        (gateway, root),
        (to_users, gateway),
        (to_posts, gateway),
        (users, to_users),
        (posts, to_posts),
        (users_query, users),
        (posts_query, posts),
    ] {
        assert_eq!(
            child["parentSpanId"], parent["spanId"],
            "{} under {}",
            child["name"], parent["name"]
        );
        // Consistent timing: a child runs within its parent (one clock, a little slack for rounding).
        let slack = 2_000_000;
        let (cs, ce) = (
            child["startTimeUnixNano"].as_u64().unwrap(),
            child["endTimeUnixNano"].as_u64().unwrap(),
        );
        let (ps, pe) = (
            parent["startTimeUnixNano"].as_u64().unwrap(),
            parent["endTimeUnixNano"].as_u64().unwrap(),
        );
        assert!(
            cs + slack >= ps && ce <= pe + slack && cs <= ce,
            "{} is not within {}",
            child["name"],
            parent["name"]
        );
    }
    assert!(spans.iter().all(|s| s["traceId"] == id.as_str()));
    assert_eq!(gateway["attributes"]["http.route"], "/users/{id}/posts");
    assert_eq!(gateway["attributes"]["url.path"], "/users/1/posts");
    assert_eq!(users["attributes"]["http.response.status_code"], 200);
    assert!(by_id.len() == 8, "span ids are distinct");
    // And the waterfall shows the queries as rows under their requests.
    let out = p.msctl().args(["trace", &id]).output().unwrap();
    let waterfall = String::from_utf8_lossy(&out.stdout);
    assert!(waterfall.contains("users SELECT users"), "{waterfall}");

    // Health probes are never traced.
    let list = p.json(&["traces", "--json", "--limit", "100"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| !t["route"].as_str().unwrap().contains("/health")),
        "{list}"
    );
}

#[test]
fn a_call_while_posts_is_dead_shows_the_error_in_its_trace() {
    let p = sample_with("", "no");
    p.up();
    let posts = p.pid_of("posts-1").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(posts as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    p.wait_for_state("posts-1", "stopped");
    let answer = call_json(&p, &["users/2/posts"]);
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["body"]["partial"], true);
    let id = answer["trace_id"].as_str().unwrap();
    let spans = spans_of(&p, id, 4);
    let failed = spans
        .iter()
        .find(|s| s["name"] == "GET /posts" && s["kind"] == 3)
        .unwrap_or_else(|| panic!("no call to posts in {spans:#?}"));
    assert_eq!(failed["status"]["code"], 2);
    assert_eq!(failed["attributes"]["error.type"], "no_instance");
    assert!(
        failed["status"]["message"]
            .as_str()
            .unwrap()
            .contains("posts")
    );

    // The waterfall marks it without colour, fits 80 columns, and stars the critical path.
    let out = p.msctl().args(["trace", id]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("gateway → posts GET /posts") && l.contains("ERR no_instance")),
        "{text}"
    );
    assert!(text.lines().skip(2).any(|l| l.starts_with('*')), "{text}");
    for line in text.lines() {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line}",
            line.chars().count()
        );
    }
    let errors = p.json(&["traces", "--errors", "--json"]);
    assert!(
        errors
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["trace_id"] == id && t["error"] == true)
    );
}

#[test]
fn concurrent_calls_give_separate_complete_traces() {
    let p = sample_with("", "on-failure");
    p.up();
    // 200 calls, 20 at a time: concurrent enough to interleave every service's spans, and
    // bounded so that a two-core CI machine running other suites beside it is not swamped
    // into the gateway's upstream timeout.
    const CALLS: usize = 200;
    const AT_ONCE: usize = 20;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let ids: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                let (p, next) = (&p, &next);
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= CALLS {
                            return ids;
                        }
                        let answer = call_json(p, &[&format!("users/{}/posts", i % 10 + 1)]);
                        assert_eq!(answer["status"], 200, "{answer}");
                        ids.push(answer["trace_id"].as_str().unwrap().to_string());
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), CALLS, "every call has its own trace");
    // Complete: the six spans of the requests, each under its parent. The SELECT spans are
    // there only where users or posts read their database; an answer kept from an earlier
    // request makes none.
    let request_spans = [
        ("msctl", 3, "GET"),
        ("gateway", 2, "GET /users/{id}/posts"),
        ("gateway", 3, "GET /users/{id}"),
        ("gateway", 3, "GET /posts"),
        ("users", 2, "GET /users/{id}"),
        ("posts", 2, "GET /posts"),
    ];
    let complete = |spans: &[Value]| {
        let ids: HashSet<&str> = spans.iter().filter_map(|s| s["spanId"].as_str()).collect();
        let parented = spans.iter().all(|s| {
            s.get("parentSpanId")
                .is_none_or(|parent| ids.contains(parent.as_str().unwrap_or_default()))
        });
        let each_once = request_spans.iter().all(|(service, kind, name)| {
            spans
                .iter()
                .filter(|s| {
                    s["resource"]["service.name"] == *service
                        && s["kind"] == *kind
                        && s["name"] == *name
                })
                .count()
                == 1
        });
        let queries = spans.iter().filter(|s| s["kind"] == 1).count();
        parented && each_once && spans.len() == request_spans.len() + queries && queries <= 2
    };
    for id in &unique {
        p.wait_until(&format!("trace {id} to be complete"), |p| {
            trace_spans(p, id).filter(|spans| complete(spans))
        });
    }
    let all = p.json(&["traces", "--json", "--limit", "1000"]);
    let mine: Vec<&Value> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| unique.contains(&t["trace_id"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(mine.len(), CALLS);
    assert!(mine.iter().all(|t| t["route"] == "GET /users/{id}/posts"
        && t["status"] == 200
        && t["error"] == false));
}

#[test]
fn stored_spans_export_as_valid_otlp_and_retry_only_when_allowed() {
    let p = sample_with("", "on-failure");
    p.up();
    let answer = call_json(&p, &["users/3/posts"]);
    spans_of(&p, answer["trace_id"].as_str().unwrap(), 6);
    call_json(
        &p,
        &[
            "POST",
            "/users",
            "-d",
            r#"{"name": "Otel", "email": "otel@example.com"}"#,
        ],
    );

    // 503 first: retried, then accepted.
    let receiver = Receiver::start(vec![503]);
    let out = p
        .msctl()
        .args(["traces", "export", "--otlp", &receiver.url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 2, "one retry after the 503");
    assert!(bodies.iter().all(|(path, _)| path == "/v1/traces"));
    let exported: usize = stderr
        .split("exported ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(exported >= 7, "{stderr}");
    assert_eq!(otlp_span_count(&[bodies[1].1.clone()]), exported);
    let json: Value = serde_json::from_slice(&bodies[1].1).unwrap();
    let span = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert!(
        span["traceId"]
            .as_str()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert!(span["startTimeUnixNano"].is_string());

    // 400: not retried, reported, and a documented exit code.
    let receiver = Receiver::start(vec![400]);
    let out = p
        .msctl()
        .args(["traces", "export", "--otlp", &receiver.url])
        .output()
        .unwrap();
    // The receiver was reached: 13 (refused), kept apart from 12 (could not be reached).
    assert_eq!(out.status.code(), Some(13));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was reached but answered 400"));
    assert_eq!(receiver.bodies().len(), 1);

    // A URL that is no URL is bad usage, not an unreachable receiver.
    let out = p
        .msctl()
        .args(["traces", "export", "--otlp", "notaurl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an http:// or https:// URL"));
}

#[test]
fn services_export_live_when_an_otlp_endpoint_is_set() {
    let receiver = Receiver::start(vec![]);
    let p = sample_with(
        &format!("OTEL_EXPORTER_OTLP_ENDPOINT = \"{}\"", receiver.url),
        "on-failure",
    );
    p.up();
    let answer = call_json(&p, &["users/4/posts"]);
    let id = answer["trace_id"].as_str().unwrap().to_string();
    // gateway (3 spans), users (1) and posts (1) export on their own, as OTLP protobuf.
    let trace_id: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let spans = wait_until(Duration::from_secs(10), "the services' live export", || {
        let mut by_service: HashMap<String, usize> = HashMap::new();
        // Log records go to /v1/logs beside them.
        for (path, body) in receiver.bodies() {
            if path == "/v1/logs" {
                continue;
            }
            assert_eq!(path, "/v1/traces");
            let request = ExportTraceServiceRequest::decode(&body[..]).expect("OTLP protobuf");
            for rs in request.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| r.attributes.iter())
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.clone())
                    .and_then(|v| match v.value {
                        Some(any_value::Value::StringValue(s)) => Some(s),
                        _ => None,
                    })
                    .unwrap_or_default();
                let n = rs
                    .scope_spans
                    .iter()
                    .flat_map(|ss| ss.spans.iter())
                    .filter(|s| s.trace_id == trace_id)
                    .count();
                *by_service.entry(service).or_default() += n;
            }
        }
        ["gateway", "users", "posts"]
            .iter()
            .all(|s| by_service.get(*s).copied().unwrap_or(0) > 0)
            .then_some(by_service)
    });
    assert!(spans.values().sum::<usize>() >= 5, "{spans:?}");
}

#[test]
fn tracing_off_records_nothing_but_keeps_propagating() {
    let p = sample_with("MSCTL_TRACE = \"off\"", "on-failure");
    p.up();
    let answer = call_json(&p, &["users/1/posts"]);
    assert_eq!(answer["status"], 200);
    let header = answer["headers"]["traceparent"]
        .as_str()
        .expect("the gateway still answers with a traceparent");
    assert!(
        header.contains(answer["trace_id"].as_str().unwrap()),
        "{header}"
    );
    // Only msctl's own root span is stored: the services recorded nothing.
    let id = answer["trace_id"].as_str().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let spans = common::trace_spans(&p, id).unwrap();
    assert_eq!(
        common::services_of(&spans),
        ["msctl"],
        "services recorded spans with tracing off"
    );
}

#[test]
fn call_exit_codes_and_output_modes() {
    let p = sample_with("", "on-failure");
    // Nothing running yet.
    let out = p.msctl().args(["call", "users/1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    p.up();
    let out = p.msctl().args(["call", "users/1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // Piped: raw JSON, one line; status, duration and trace id on stderr.
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["name"], "Ada Lovelace");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("200 OK · ") && stderr.contains(" · trace "),
        "{stderr}"
    );
    p.msctl().args(["call", "users/999"]).assert().code(10);
    p.msctl()
        .args(["call", "DELETE", "users/abc"])
        .assert()
        .code(10);
    // Directly to a service, with a body from a file.
    p.write(
        "new-user.json",
        r#"{"name": "From File", "email": "file@example.com"}"#,
    );
    let answer = call_json(
        &p,
        &[
            "POST",
            "users",
            "-d",
            "@new-user.json",
            "--service",
            "users",
        ],
    );
    assert_eq!(answer["status"], 201);
    assert_eq!(answer["instance"], "users-1");
    // From standard input, as curl's `-d @-`.
    let out = p
        .msctl()
        .args(["call", "POST", "users", "-d", "@-", "--json"])
        .write_stdin(r#"{"name": "From Stdin", "email": "stdin@example.com"}"#)
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["status"], 201, "{answer}");
    assert_eq!(answer["body"]["name"], "From Stdin");
    // A body meant as JSON that does not parse still goes as JSON, so that the service says
    // what is wrong with it (it said it wanted JSON: 415).
    let out = p
        .msctl()
        .args(["call", "POST", "users", "-d", r#"{"name": "#, "--json"])
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["status"], 400, "{answer}");
    assert!(
        answer["body"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("EOF while parsing")),
        "{answer}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("warning: the body is not valid JSON (EOF while parsing"),
        "{out:?}"
    );
    // A source with no end (or a wrong, huge file) is refused at the limit, not read forever.
    p.msctl()
        .args(["call", "POST", "users", "-d", "@/dev/zero"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "/dev/zero is larger than 16 MiB, the most `msctl call` sends",
        ));
    // Bad input: a method that is not one, a header without a colon, a missing body file.
    p.msctl().args(["call", "GE T", "users"]).assert().code(2);
    p.msctl()
        .args(["call", "users", "-H", "nocolon"])
        .assert()
        .code(2);
    p.msctl()
        .args(["call", "users", "-d", "@missing.json"])
        .assert()
        .code(2);
    p.msctl()
        .args(["call", "users", "--service", "billing"])
        .assert()
        .code(2);
    // A 5xx: users down behind the gateway.
    p.msctl().args(["stop", "users"]).assert().success();
    p.msctl().args(["call", "users/1/posts"]).assert().code(11);
    // Unreachable: the target itself is down.
    p.msctl().args(["stop", "gateway"]).assert().success();
    p.msctl().args(["call", "users/1"]).assert().code(12);
}

#[test]
fn traces_filter_and_the_trace_flag_prints_a_waterfall() {
    let p = sample_with("", "on-failure");
    p.up();
    let out = p
        .msctl()
        .args(["call", "users/5/posts", "--trace"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("GET /users/{id}/posts")
            && text.contains("users GET /users/{id}")
            && text.contains("* critical path"),
        "{text}"
    );
    call_json(&p, &["users/5"]);
    let id = call_json(&p, &["users/6"])["trace_id"]
        .as_str()
        .unwrap()
        .to_string();
    spans_of(&p, &id, 3);
    let list = |args: &[&str]| -> Vec<Value> {
        let out = p
            .msctl()
            .arg("traces")
            .args(args)
            .arg("--json")
            .output()
            .unwrap();
        stdout_json(&out).as_array().unwrap().clone()
    };
    assert_eq!(
        list(&["--limit", "1"])[0]["trace_id"],
        id.as_str(),
        "newest first"
    );
    assert_eq!(
        list(&["--limit", "1"])[0]["route"],
        "GET /users/{*rest}",
        "the gateway names proxied routes by service"
    );
    assert!(
        list(&["--route", "/users/{id}/posts"])
            .iter()
            .all(|t| t["route"] == "GET /users/{id}/posts")
    );
    assert!(
        list(&["--service", "posts"])
            .iter()
            .all(|t| t["services"].as_array().unwrap().contains(&"posts".into()))
    );
    assert!(list(&["--min-duration", "10s"]).is_empty());
    p.msctl()
        .args(["traces", "--min-duration", "soon"])
        .assert()
        .code(2);
    let out = p.msctl().args(["trace", &id[..8]]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("trace {id}")));
    p.msctl().args(["trace", "ffffffffffff"]).assert().code(1);
}

#[test]
fn past_the_rate_traces_are_sampled_whole_and_top_still_counts_every_request() {
    let p = sample_with("MSCTL_TRACES_PER_SECOND = \"20\"", "on-failure");
    p.up();
    let gateway = p.url_of("gateway-1");

    // A caller that did not sample its trace: nothing is recorded, but every service's log
    // line carries the trace, and the answer passes the decision on.
    let trace = "5ce0e9a56015fec5aadfa328ae398115";
    let answer = common::http()
        .get(format!("{gateway}/users/1/posts"))
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-00"))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 200);
    let back = answer.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(back.contains(trace) && back.ends_with("-00"), "{back}");
    for instance in ["gateway-1", "users-1", "posts-1"] {
        let log = p.path().join(format!(".msctl/logs/{instance}.log"));
        p.wait_until(&format!("{instance}'s request line with the trace"), |_| {
            std::fs::read_to_string(&log)
                .ok()?
                .lines()
                .any(|l| l.contains(trace) && l.contains("\"request\""))
                .then_some(())
        });
    }

    // A load of new traces, far past 20 a second: four clients paced at 50 a second each, so
    // the load is well over the rate without taking the machine from the suites beside it. It
    // runs until it is clearly past what sampling keeps (on a machine busy enough to slow the
    // clients down, that takes longer), at least 3 s.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, sent, url) = (stop.clone(), sent.clone(), format!("{gateway}/users/1"));
            std::thread::spawn(move || {
                let client = common::http();
                let mut due = std::time::Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = client.get(&url).send().expect("the gateway answers");
                    assert_eq!(r.status(), 200);
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    due += Duration::from_millis(20);
                    std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
                }
            })
        })
        .collect();
    // What the sampler may keep in `secs`: 20 a second, a first window kept whole, and room for
    // chance, since which traces are kept depends on their random ids. A sampler that kept
    // everything would pass it by the margin the load is run to.
    let may_keep = |secs: f64| 40.0 * secs + 40.0;
    common::wait_until(
        Duration::from_secs(60),
        "the load to pass the sampling rate",
        || {
            let secs = started.elapsed().as_secs_f64();
            let sent = sent.load(std::sync::atomic::Ordering::Relaxed) as f64;
            (secs >= 3.0 && sent >= may_keep(secs) + 60.0).then_some(())
        },
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);

    let db = || {
        rusqlite::Connection::open_with_flags(
            p.path().join(".msctl/telemetry.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    };
    let count = |sql: &str| -> i64 { db().query_row(sql, [], |r| r.get(0)).unwrap() };
    // Stored once the services' last batches are in: the count stops moving.
    let mut last = -1;
    let recorded = p.wait_until("the last spans stored", |_| {
        std::thread::sleep(Duration::from_millis(400));
        let now = count("SELECT count(*) FROM spans WHERE service = 'gateway' AND kind = 2");
        (std::mem::replace(&mut last, now) == now).then_some(now)
    });
    assert!(
        recorded > 0 && (recorded as f64) <= may_keep(elapsed),
        "{recorded} of {sent} requests in {elapsed:.1} s recorded: sampling should keep about 20 a second"
    );
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM spans WHERE trace_id = '{trace}'"
        )),
        0,
        "the caller's unsampled trace was recorded"
    );
    // Every kept trace is whole: users' span has its gateway parent, with the same weight.
    assert_eq!(
        count(
            "SELECT count(*) FROM spans u WHERE u.service = 'users' AND u.kind = 2 AND NOT EXISTS
             (SELECT 1 FROM spans g WHERE g.trace_id = u.trace_id AND g.service = 'gateway'
              AND g.kind = 2 AND g.trace_state IS u.trace_state)"
        ),
        0,
        "a kept trace lost its gateway span, or its weight on the way"
    );
    assert!(
        count("SELECT count(*) FROM spans WHERE service = 'users' AND trace_state LIKE 'ot=th:%'")
            > 0,
        "past the rate, kept traces carry their threshold to users"
    );

    // `msctl top` weighs each kept trace by what it stands for.
    let rows = p.json(&["top", "--json", "--window", "1m"]);
    let counted: f64 = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["service"] == "gateway")
        .map(|r| r["requests"].as_f64().unwrap())
        .sum();
    let ratio = counted / sent as f64;
    eprintln!("sent {sent}, recorded {recorded}, top counts {counted:.0}");
    assert!(
        (0.5..2.0).contains(&ratio),
        "top counts {counted} requests of {sent} sent ({recorded} recorded)"
    );
}
