//! Watch mode on a copy of the repository, under a steady stream of requests through the
//! gateway: edits are rebuilt and served with no failed request, a broken build leaves the old
//! code serving, a burst of saves gives one build, and ignored folders give none.
//!
//! One test, in steps, because the copy's build is shared: the steps would only queue for it.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

const LIB: &str = "services/users/src/lib.rs";
const MAIN: &str = "services/users/src/main.rs";
/// What the first edit adds to every `/users` list.
const ORIGINAL: &str = r#""total": total,"#;
/// A build, a replacement and traces being counted, on a slow 2-core machine.
const CYCLE: Duration = Duration::from_secs(180);

/// The watch cycles written so far.
fn cycles(copy: &SampleCopy) -> Vec<Value> {
    std::fs::read_to_string(copy.path().join(".msctl/watch.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits for the cycle after the first `seen`, and returns it.
fn next_cycle(copy: &SampleCopy, seen: usize) -> Value {
    wait_until(CYCLE, "a watch cycle", || cycles(copy).get(seen).cloned())
}

/// Every request answered 2xx.
fn assert_all_ok(answers: &[(String, u16, String)], during: &str) {
    assert!(
        answers.len() > 20,
        "only {} requests during {during}",
        answers.len()
    );
    let failed: Vec<_> = answers
        .iter()
        .filter(|(_, status, _)| !(200..300).contains(status))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during {during}: {:#?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
}

#[test]
fn watch_mode_rebuilds_and_replaces_with_no_failed_request() {
    let copy = SampleCopy::take();
    let p = &copy.project;
    // A first build of the copy can take minutes (cold); `up` builds it.
    let out = p
        .msctl()
        .args(["up", "-d"])
        .timeout(Duration::from_secs(900))
        .output()
        .expect("msctl runs");
    assert!(
        out.status.success(),
        "msctl up -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gateway = p.url_of("gateway-1");
    let list = format!("{gateway}/users?limit=1");

    // `msctl watch --json` turns watching on and prints each cycle; Ctrl-C turns it off.
    let mut watch = Children::default();
    watch.0.push(
        p.msctl_process()
            .args(["watch", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("msctl watch runs"),
    );
    p.wait_until("watching to be on", |p| {
        (p.registry()?["supervisor"]["watching"] == true).then_some(())
    });
    let ps = p.msctl().arg("ps").output().expect("ps runs");
    assert!(String::from_utf8_lossy(&ps.stderr).contains("watching for changes"));

    // 1. A changed answer in users' handler is served, and no request fails meanwhile.
    let load = Load::start(vec![list.clone(), format!("{gateway}/users/1/posts")]);
    copy.edit(LIB, ORIGINAL, r#""total": total, "edition": "watched","#);
    let stdout = BufReader::new(watch.0[0].stdout.take().expect("piped"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(CYCLE)
        .expect("a line from msctl watch within the time a cycle takes");
    let cycle: Value = serde_json::from_str(&line).expect("a JSON cycle");
    assert_eq!(cycle["outcome"], "replaced", "{cycle}");
    assert_eq!(cycle["services"], serde_json::json!(["users"]));
    assert_eq!(cycle["changed"], serde_json::json!([LIB]));
    assert_eq!(cycle["replaced"], serde_json::json!(["users-1"]));
    assert_eq!(cycle["failed_requests"], 0, "{cycle}");
    assert!(cycle["debounce_ms"].as_u64().unwrap() >= 200, "{cycle}");
    let (_, body) = get_json(&list);
    assert_eq!(body["edition"], "watched", "{body}");
    load.wait_for_more(10);
    assert_all_ok(&load.stop(), "the first replacement");

    // Ctrl-C on `msctl watch` ends watching, which it turned on.
    signal(watch.0[0].id(), nix::sys::signal::Signal::SIGINT);
    let _ = watch.0[0].wait();
    p.wait_until("watching to be off", |p| {
        (p.registry()?["supervisor"]["watching"] == false).then_some(())
    });
    p.msctl().args(["watch", "-d"]).assert().success();

    // 2. A broken build: the old users keeps answering, and the error names file and line.
    let seen = cycles(&copy).len();
    let load = Load::start(vec![list.clone()]);
    copy.edit(
        LIB,
        "pub fn app(state: Users) -> Router {",
        "pub fn app(state: Users) -> Router {\n    let broken: u32 = \"not a number\";",
    );
    let broken_line = std::fs::read_to_string(copy.path().join(LIB))
        .unwrap()
        .lines()
        .position(|l| l.contains("let broken"))
        .unwrap()
        + 1;
    let cycle = next_cycle(&copy, seen);
    assert_eq!(cycle["outcome"], "build_failed", "{cycle}");
    let error = cycle["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("{LIB}:{broken_line}:")) && error.contains("error[E0308]"),
        "{error}"
    );
    let registry = p.registry().unwrap();
    assert_eq!(
        registry["services"]["users"]["build_failed"]["error"],
        error
    );
    let ps = p.msctl().args(["ps", "--json"]).output().unwrap();
    let rows = stdout_json(&ps);
    let users = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["instance"] == "users-1")
        .unwrap();
    assert_eq!(users["state"], "healthy, build failed");
    let (status, body) = get_json(&list);
    assert_eq!((status, &body["edition"]), (200, &Value::from("watched")));

    // Fixed: the fixed code is served, and `ps` no longer says the build failed.
    let seen = cycles(&copy).len();
    copy.edit(LIB, "    let broken: u32 = \"not a number\";\n", "");
    copy.edit(LIB, r#""edition": "watched""#, r#""edition": "fixed""#);
    let cycle = next_cycle(&copy, seen);
    assert_eq!(cycle["outcome"], "replaced", "{cycle}");
    assert_eq!(get_json(&list).1["edition"], "fixed");
    assert!(
        p.registry().unwrap()["services"]["users"]
            .get("build_failed")
            .is_none()
    );
    assert_all_ok(&load.stop(), "the broken and the fixed build");

    // 3. Edits under target/ and .msctl/ (and an editor's swap file) start nothing; then 20
    // saves in 100 ms give one build.
    let seen = cycles(&copy).len();
    p.write("target/debug/noise.rs", "x");
    p.write("services/users/target/noise.rs", "x");
    p.write(".msctl/noise.rs", "x");
    p.write("services/users/src/.lib.rs.swp", "x");
    let text = std::fs::read_to_string(copy.path().join(LIB)).unwrap();
    for i in 0..20 {
        std::fs::write(copy.path().join(LIB), format!("{text}// save {i}\n")).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let cycle = next_cycle(&copy, seen);
    assert_eq!(cycle["changed"], serde_json::json!([LIB]), "{cycle}");
    // Two debounce periods and more with nothing new: the burst was one build.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        cycles(&copy).len(),
        seen + 1,
        "{:#?}",
        &cycles(&copy)[seen..]
    );

    // 4. A new instance that fails its health check is stopped; the old one serves.
    let seen = cycles(&copy).len();
    let load = Load::start(vec![list.clone()]);
    copy.edit(
        MAIN,
        "async fn main() -> ExitCode {",
        "async fn main() -> ExitCode {\n    eprintln!(\"watch test: this build refuses to start\");\n    return ExitCode::from(3);",
    );
    let cycle = next_cycle(&copy, seen);
    assert_eq!(cycle["outcome"], "start_failed", "{cycle}");
    let tail = cycle["log_tail"].to_string();
    assert!(tail.contains("this build refuses to start"), "{cycle}");
    assert_eq!(get_json(&list).1["edition"], "fixed");
    assert_all_ok(&load.stop(), "a failed replacement");
    let seen = cycles(&copy).len();
    copy.restore(MAIN);
    assert_eq!(next_cycle(&copy, seen)["outcome"], "replaced");

    // 5. A service added to msctl.toml while watching starts.
    let seen = cycles(&copy).len();
    let manifest = std::fs::read_to_string(copy.path().join("msctl.toml")).unwrap();
    std::fs::write(
        copy.path().join("msctl.toml"),
        format!(
            "{manifest}\n[services.extra]\ncommand = [\"{}\"]\n",
            bin("msctl-fixture").display()
        ),
    )
    .unwrap();
    let cycle = next_cycle(&copy, seen);
    assert_eq!(cycle["outcome"], "applied", "{cycle}");
    assert_eq!(cycle["started"], serde_json::json!(["extra"]));
    p.wait_for_state("extra-1", "healthy");
    // And removed again, it stops.
    let seen = cycles(&copy).len();
    std::fs::write(copy.path().join("msctl.toml"), &manifest).unwrap();
    let cycle = next_cycle(&copy, seen);
    assert_eq!(cycle["stopped"], serde_json::json!(["extra"]), "{cycle}");
    assert!(p.instance("extra-1").is_none());

    // 6. A service whose settings change is replaced with them, with no failed request.
    let seen = cycles(&copy).len();
    let load = Load::start(vec![format!("{gateway}/users/1/posts")]);
    std::fs::write(
        copy.path().join("msctl.toml"),
        manifest.replace(
            "command = [\"target/debug/posts\"]",
            "command = [\"target/debug/posts\"]\nenv = { WATCH_TEST = \"changed\" }",
        ),
    )
    .unwrap();
    let cycle = next_cycle(&copy, seen);
    assert_eq!(cycle["outcome"], "applied", "{cycle}");
    assert_eq!(cycle["replaced"], serde_json::json!(["posts-1"]), "{cycle}");
    assert_eq!(cycle["failed_requests"], 0, "{cycle}");
    let pid = p.pid_of("posts-1").expect("posts-1 runs");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        String::from_utf8_lossy(&environ).contains("WATCH_TEST=changed"),
        "posts-1 runs with the new settings"
    );
    assert_all_ok(&load.stop(), "a replacement with new settings");
}
