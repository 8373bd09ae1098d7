//! `msctl init` on projects outside this repository, with msctl run from its built binary: an
//! empty folder grown with `scaffold` (Rust and Python) into a traced system, a Procfile and a
//! compose file imported and run, a project detected from its files, and the guard rails
//! (refusal to overwrite, `--force`, `--dry-run`, no msctl.toml in reach). Each msctl.toml
//! written is snapshotted.

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// A server with no dependencies: answers every request with 200 and a JSON body, on the port
/// in PORT (or after `--port`), so it builds in seconds.
const TINY_SERVER: &str = r#"use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port = std::env::var("PORT")
        .ok()
        .or_else(|| args.iter().position(|a| a == "--port").and_then(|i| args.get(i + 1).cloned()))
        .unwrap_or_else(|| "8080".into());
    let listener = std::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut request = [0u8; 2048];
        let _ = stream.read(&mut request);
        let body = b"{\"status\":\"ok\"}";
        let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    }
}
"#;

fn tiny_crate(p: &TestProject, dir: &str, name: &str) {
    p.write(
        &format!("{dir}Cargo.toml"),
        &format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
    );
    p.write(&format!("{dir}src/main.rs"), TINY_SERVER);
}

fn run(p: &TestProject, args: &[&str]) -> std::process::Output {
    p.msctl()
        .args(args)
        .timeout(Duration::from_secs(600))
        .output()
        .unwrap()
}

fn ok(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "{stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn manifest(p: &TestProject) -> String {
    std::fs::read_to_string(p.path().join("msctl.toml")).unwrap()
}

fn state(p: &TestProject, instance: &str) -> String {
    p.instance(instance)
        .map(|i| i["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// `up -d`, with the build log in the failure message.
fn up(p: &TestProject, cmd: &mut assert_cmd::Command) {
    let out = cmd.args(["up", "-d"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(p.path().join(".msctl/build.log")).unwrap_or_default()
    );
}

#[test]
fn without_msctl_toml_in_reach_msctl_says_to_run_init() {
    let p = TestProject::empty();
    for args in [&["ps"][..], &["up"], &["call", "x/1"]] {
        let out = run(&p, args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("error: no msctl.toml here or above; run msctl init\n"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn init_refuses_to_overwrite_unless_forced_and_a_dry_run_writes_nothing() {
    let p = TestProject::empty();
    let out = run(&p, &["init", "--dry-run"]);
    ok(&out);
    assert!(
        !p.path().join("msctl.toml").exists(),
        "a dry run writes nothing"
    );
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(printed.contains("msctl scaffold NAME"), "{printed}");

    ok(&run(&p, &["init"]));
    assert_eq!(manifest(&p), printed, "--dry-run prints what init writes");
    insta::assert_snapshot!("empty_folder", manifest(&p));

    std::fs::write(p.path().join("msctl.toml"), "# mine\n").unwrap();
    let out = run(&p, &["init"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exists already") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        manifest(&p),
        "# mine\n",
        "a refused init leaves the file alone"
    );

    p.write("Procfile", "web: python3 -m http.server $PORT\n");
    ok(&run(&p, &["init", "--force"]));
    assert!(manifest(&p).contains("[services.web]"), "{}", manifest(&p));
    let before = manifest(&p);
    ok(&run(
        &p,
        &["init", "--dry-run", "--from", "Procfile", "-c", "web=3"],
    ));
    assert_eq!(manifest(&p), before, "a dry run over a file leaves it");

    let out = run(&p, &["init", "--force", "--from", "missing.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read missing.yaml"));
    let out = run(&p, &["init", "--force", "-c", "web"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TYPE=N"));
    assert_eq!(manifest(&p), before);
}

/// An empty folder: `init`, a Rust service and a Python service that calls it, both scaffolded,
/// built from crates.io and PyPI alone, started healthy, answering, and traced end to end.
#[test]
fn an_empty_folder_grows_into_a_traced_rust_and_python_system() {
    let p = TestProject::empty();
    ok(&run(&p, &["init"]));
    ok(&run(&p, &["scaffold", "api"]));
    ok(&run(
        &p,
        &["scaffold", "worker", "--template", "python", "--dep", "api"],
    ));
    let cargo_toml = std::fs::read_to_string(p.path().join("services/api/Cargo.toml")).unwrap();
    assert!(
        !cargo_toml.contains("path =") && !cargo_toml.contains("workspace = true"),
        "nothing path-bound: {cargo_toml}"
    );
    insta::assert_snapshot!("empty_folder_after_scaffolds", manifest(&p));

    // The crate's dependencies are the workspace's own, already in cargo's cache: it builds
    // offline, in a target folder kept between runs.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("init-standalone-target");
    let with_env = || {
        let mut cmd = p.msctl();
        cmd.env("CARGO_TARGET_DIR", &target)
            .env("CARGO_NET_OFFLINE", "true")
            .timeout(Duration::from_secs(900));
        cmd
    };
    up(&p, &mut with_env());
    assert_eq!(state(&p, "api-1"), "healthy");
    assert_eq!(state(&p, "worker-1"), "healthy");

    let answer = call_json(&p, &["api/hello"]);
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"]["message"], "hello from api");
    let answer = call_json(&p, &["worker/hello"]);
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"]["api"]["id"], 1, "{answer}");
    let id = answer["trace_id"].as_str().unwrap().to_string();

    // msctl → worker → api, each span the child of the one before across services.
    let spans = p.wait_until("the whole trace", |p| {
        let spans = trace_spans(p, &id)?;
        spans
            .iter()
            .any(|s| s["resource"]["service.name"] == "api")
            .then_some(spans)
    });
    let by_id = |sid: &Value| spans.iter().find(|s| s["spanId"] == *sid);
    let api_server = spans
        .iter()
        .find(|s| s["resource"]["service.name"] == "api" && s["kind"] == 2)
        .unwrap_or_else(|| panic!("no api server span: {spans:#?}"));
    assert_eq!(api_server["name"], "GET /api/{id}");
    let mut chain = vec!["api".to_string()];
    let mut at = api_server;
    while let Some(parent) = by_id(&at["parentSpanId"]) {
        let service = parent["resource"]["service.name"]
            .as_str()
            .unwrap()
            .to_string();
        if chain.last() != Some(&service) {
            chain.push(service);
        }
        at = parent;
    }
    assert_eq!(chain, ["api", "worker", "msctl"], "{spans:#?}");
    let out = run(&p, &["trace", "last"]);
    let waterfall = String::from_utf8_lossy(&out.stdout);
    assert!(waterfall.contains("msctl → worker → api"), "{waterfall}");
    ok(&run(&p, &["down"]));
}

/// A Procfile with a Python web process and a small Rust binary: imported, built, both healthy.
#[test]
fn a_procfile_is_imported_and_runs() {
    let p = TestProject::empty();
    tiny_crate(&p, "", "tiny");
    p.write(
        "Procfile",
        "# two processes\nweb: python3 -m http.server --bind 127.0.0.1 $PORT\napi: target/debug/tiny --port $PORT\n",
    );
    let stderr = ok(&run(&p, &["init", "--from", "Procfile", "-c", "web=2"]));
    assert!(stderr.contains("service web: python3"), "{stderr}");
    insta::assert_snapshot!("procfile", manifest(&p));
    up(&p, &mut p.msctl());
    for instance in ["web-1", "web-2", "api-1"] {
        assert_eq!(state(&p, instance), "healthy", "{instance}");
    }
    let address = p.instance("api-1").unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = get_json(&format!("http://{address}/"));
    assert_eq!((status, &body["status"]), (200, &Value::from("ok")));
    ok(&run(&p, &["down"]));
}

/// A compose file with a service built from a Rust crate (HTTP healthcheck), an image-only
/// postgres and an image-only app: the first imported and run, the others reported with what
/// to do, every unmapped key named.
#[test]
fn a_compose_file_is_imported_reported_and_runs() {
    let p = TestProject::empty();
    tiny_crate(&p, "api/", "api");
    p.write(
        "compose.yaml",
        r#"services:
  api:
    build: ./api
    environment:
      GREETING: hello
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost:8080/health"]
      interval: 2s
      retries: 3
    depends_on:
      db:
        condition: service_healthy
    deploy:
      replicas: 2
    ports: ["8080:8080"]
    volumes: ["./data:/data"]
  db:
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: example
  metrics:
    image: prom/prometheus
volumes:
  data: {}
"#,
    );
    let stderr = ok(&run(&p, &["init", "--from", "compose.yaml"]));
    for expected in [
        "service api:",
        "not imported: db: only an image (postgres:16)",
        "apt-get install postgresql",
        "not imported: metrics: only an image (prom/prometheus)",
        "not mapped: top-level `volumes`",
        "not mapped: services.api.volumes",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    let text = manifest(&p);
    assert!(text.contains("health = \"/health\""), "{text}");
    insta::assert_snapshot!("compose", text);
    up(&p, &mut p.msctl());
    assert_eq!(state(&p, "api-1"), "healthy");
    assert_eq!(state(&p, "api-2"), "healthy");
    ok(&run(&p, &["down"]));
}

/// A project with a Cargo workspace (one binary visibly serving /health, one not) and a Node
/// package: found without questions, guesses commented.
#[test]
fn a_project_is_detected_from_its_files() {
    let p = TestProject::empty();
    p.write(
        "Cargo.toml",
        "[workspace]\nmembers = [\"crates/*\"]\nresolver = \"2\"\n",
    );
    tiny_crate(&p, "crates/orders/", "orders");
    p.write(
        "crates/orders/src/routes.rs",
        "pub const HEALTH: &str = \"/health\";\n",
    );
    tiny_crate(&p, "crates/billing/", "billing");
    p.write(
        "web/package.json",
        r#"{"name": "@shop/web", "scripts": {"start": "node server.js"}}"#,
    );
    p.write(
        "web/server.js",
        "require('http').createServer((q, s) => s.end('ok')).listen(process.env.PORT);\n",
    );
    let out = run(&p, &["init", "--dry-run"]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!p.path().join("msctl.toml").exists());
    insta::assert_snapshot!("detected", text);
    ok(&run(&p, &["init"]));
    // What it wrote is an msctl.toml msctl reads: no configuration error (exit 3).
    let out = run(&p, &["ps"]);
    assert_ne!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn links_to_folders_above_do_not_make_detection_endless() {
    // Each project links back to the root, so every walk that follows links finds the projects
    // again inside themselves: `msctl init` ran for minutes on this.
    let p = TestProject::empty();
    for name in ["web", "api"] {
        p.write(
            &format!("{name}/package.json"),
            &format!(r#"{{"name": "{name}", "scripts": {{"start": "node server.js"}}}}"#),
        );
        p.write(&format!("{name}/server.js"), "// '/health'\n");
        std::os::unix::fs::symlink("..", p.path().join(name).join("up")).unwrap();
    }
    let out = p
        .msctl()
        .args(["init", "--dry-run"])
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[services.api]") && text.contains("[services.web]"),
        "{text}"
    );
}
