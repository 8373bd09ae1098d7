//! Failure on purpose, under a steady stream of requests: what users of the system see.

mod common;

use common::*;
use std::time::Duration;

/// Every request of a load was answered 2xx, none partially, and there were enough to count.
fn assert_all_answered(answers: &[(String, u16, String)]) {
    assert!(
        answers.len() > 50,
        "only {} requests were sent",
        answers.len()
    );
    let failed: Vec<_> = answers
        .iter()
        .filter(|(_, status, body)| {
            !(200..300).contains(status) || body.contains("\"partial\":true")
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed or were partial: {:#?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
}

#[test]
fn killing_one_of_three_posts_replicas_fails_no_request() {
    let p = TestProject::sample_scaled(1, 3);
    p.up();
    let gateway = p.url_of("gateway-1");
    let load = Load::start(vec![
        format!("{gateway}/posts/1"),
        format!("{gateway}/users/1/posts"),
        format!("{gateway}/posts?limit=5"),
    ]);
    load.wait_for_more(30);
    let victim = p.pid_of("posts-2").expect("posts-2 runs");
    signal(victim, nix::sys::signal::Signal::SIGKILL);
    // It dies, is restarted, and comes back into rotation while the stream goes on.
    p.wait_until("posts-2 to be back", |p| {
        let back = p.instance("posts-2")?;
        (back["state"] == "healthy" && back["pid"].as_u64() != Some(u64::from(victim)))
            .then_some(())
    });
    // posts-2 back in rotation: the stream goes on through it.
    load.wait_for_more(30);
    let answers = load.stop();
    assert_all_answered(&answers);
}

#[test]
fn restarting_the_only_users_instance_fails_no_request() {
    let p = TestProject::sample();
    p.up();
    let gateway = p.url_of("gateway-1");
    let before = p.pid_of("users-1").expect("users-1 runs");
    let load = Load::start(vec![
        format!("{gateway}/users/1"),
        format!("{gateway}/users/1/posts"),
    ]);
    load.wait_for_more(30);
    p.msctl().args(["restart", "users"]).assert().success();
    load.wait_for_more(30);
    let answers = load.stop();
    let now = p
        .registry()
        .and_then(|r| {
            r["services"]["users"]["instances"].as_array().map(|i| {
                i.iter()
                    .filter_map(|i| i["pid"].as_u64())
                    .collect::<Vec<_>>()
            })
        })
        .unwrap_or_default();
    assert!(
        !now.contains(&u64::from(before)),
        "users was replaced: {now:?}"
    );
    assert_all_answered(&answers);
}

#[test]
fn a_replacement_that_never_becomes_healthy_leaves_the_old_instance_serving() {
    let p = TestProject::new(
        r#"
[services.alpha]
# Healthy until the file `broken` appears in the project folder; then it never listens.
command = ["sh", "-c", "if [ -f broken ]; then exec {bin}/msctl-fixture --no-listen; else exec {bin}/msctl-fixture; fi"]
start_timeout = "2s"
"#,
    );
    p.up();
    let before = p.pid_of("alpha-1").expect("alpha-1 runs");
    p.write("broken", "");
    let out = p.msctl().args(["restart", "alpha"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("alpha-2")
            && stderr.contains("the running instances were left as they were"),
        "{stderr}"
    );
    let alpha = p.instance("alpha-1").expect("alpha-1 is registered");
    assert_eq!(alpha["state"], "healthy");
    assert_eq!(
        alpha["pid"].as_u64(),
        Some(u64::from(before)),
        "alpha-1 was not touched"
    );
    assert!(alive(before));
    assert!(
        p.instance("alpha-2").is_none(),
        "the failed replacement is gone"
    );
}

#[test]
fn scaling_posts_up_and_down_under_load_fails_no_request() {
    let p = TestProject::sample();
    p.up();
    let gateway = p.url_of("gateway-1");
    // A POST is never retried once it may have reached posts: draining has to get it right.
    let load = Load::requests(vec![
        (format!("{gateway}/posts/1"), None),
        (format!("{gateway}/users/1/posts"), None),
        (
            format!("{gateway}/posts"),
            Some(r#"{"user_id": 1, "title": "t", "body": "b"}"#.into()),
        ),
    ]);
    p.msctl().args(["scale", "posts=3"]).assert().success();
    for id in ["posts-1", "posts-2", "posts-3"] {
        assert_eq!(p.instance(id).expect(id)["state"], "healthy", "{id}");
    }
    load.wait_for_more(30);
    p.msctl().args(["scale", "posts=-1"]).assert().success();
    assert!(
        p.instance("posts-3").is_none(),
        "posts-3 was drained and removed"
    );
    p.msctl().args(["scale", "posts=1"]).assert().success();
    load.wait_for_more(20);
    let answers = load.stop();
    let registry = p.registry().unwrap();
    let left: Vec<&str> = registry["services"]["posts"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(left, ["posts-1"]);
    assert_all_answered(&answers);
}

#[test]
fn scale_says_what_is_wrong_with_its_arguments() {
    let p = TestProject::sample();
    p.up();
    let out = p.msctl().args(["scale", "posts"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not SERVICE=N"));
    let out = p.msctl().args(["scale", "posts=-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("at least one") && stderr.contains("msctl stop posts"),
        "{stderr}"
    );
    let out = p.msctl().args(["scale", "nosuch=2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service `nosuch`"));
    // A slip of the keyboard must not fork a hundred thousand processes: it is refused whole,
    // and nothing starts.
    for count in ["posts=100000", "posts=+64"] {
        p.msctl()
            .args(["scale", count])
            .assert()
            .code(2)
            .stderr(predicates::str::contains(
                "more than msctl runs of one service (64)",
            ));
    }
    assert!(p.instance("posts-2").is_none(), "no instance was started");
    assert_eq!(p.instance("posts-1").unwrap()["state"], "healthy");
}

#[test]
fn up_scale_sets_the_count_at_start_and_on_a_running_system() {
    let p = TestProject::sample();
    let out = p
        .msctl()
        .args(["up", "-d", "--no-build", "--scale", "posts=0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least one instance"));
    p.msctl()
        .args(["up", "-d", "--no-build", "--scale", "posts=65"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "at most 64 instances of one service",
        ));
    p.msctl()
        .args(["up", "-d", "--no-build", "--scale", "posts=3"])
        .assert()
        .success();
    for id in ["posts-1", "posts-2", "posts-3"] {
        assert_eq!(p.instance(id).expect(id)["state"], "healthy", "{id}");
    }
    assert!(p.instance("users-2").is_none());
    p.msctl()
        .args(["up", "-d", "--no-build", "--scale", "posts=2"])
        .assert()
        .success();
    assert!(p.instance("posts-2").is_some() && p.instance("posts-3").is_none());
}

#[test]
fn a_faulty_instance_is_retried_around_and_the_retries_are_in_the_trace() {
    let p = TestProject::sample_scaled(1, 3);
    p.up();
    p.msctl()
        .args(["fault", "posts-2", "--error-rate", "1"])
        .assert()
        .success();
    let mut resent = 0;
    let mut faulted = None;
    for _ in 0..12 {
        let answer = call_json(&p, &["posts/1"]);
        assert_eq!(answer["status"], 200, "{answer}");
        let id = answer["trace_id"].as_str().unwrap().to_string();
        let spans = p.wait_until("the trace", |p| {
            trace_spans(p, &id).filter(|s| s.len() >= 3)
        });
        resent += spans
            .iter()
            .filter(|s| s["attributes"]["http.request.resend_count"] == 1)
            .count();
        if spans
            .iter()
            .any(|s| s["events"][0]["name"] == "msctl.fault")
        {
            faulted = Some(id);
        }
    }
    assert!(resent >= 1, "no call was retried around posts-2");
    // The fault is an event on the client span that met it, in the store and in the waterfall.
    let faulted = faulted.expect("a trace with the injected fault");
    let out = p.msctl().args(["trace", &faulted]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("EVENTS")
            && text.contains("msctl.fault")
            && text.contains("msctl.fault.target=posts-2")
            && text.contains("msctl.fault.aborted=true"),
        "{text}"
    );
    p.msctl().args(["fault", "clear"]).assert().success();
    let faults = std::fs::read_to_string(p.path().join(".msctl/faults.json")).unwrap();
    assert!(!faults.contains("posts-2"), "{faults}");
}

#[test]
fn a_slow_posts_leaves_a_partial_answer_within_the_gateways_budget() {
    let p = TestProject::sample();
    p.up();
    let gateway = p.url_of("gateway-1");
    p.msctl()
        .args(["fault", "posts", "--delay", "3s", "--for", "1m"])
        .assert()
        .success();
    let started = std::time::Instant::now();
    let (status, body) = get_json(&format!("{gateway}/users/1/posts"));
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(body["partial"], true, "{body}");
    assert!(took < Duration::from_millis(2900), "took {took:?}");
    p.msctl()
        .args(["fault", "clear", "posts"])
        .assert()
        .success()
        .stderr(predicates::str::contains("cleared the fault on posts"));
    let (_, body) = get_json(&format!("{gateway}/users/1/posts"));
    assert!(body["posts"].is_array(), "{body}");
    // Clearing again does nothing and says so; a name that is not a target is refused.
    p.msctl()
        .args(["fault", "clear", "posts"])
        .assert()
        .success()
        .stderr(predicates::str::contains("no fault on posts to clear"));
    p.msctl()
        .args(["fault", "clear", "post"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("no service `post`"));
    // An instance not running yet is a fair target, with a note in case it is a typo.
    p.msctl()
        .args(["fault", "posts-9", "--delay", "1ms"])
        .assert()
        .success()
        .stderr(predicates::str::contains(
            "posts-9 is not running now; the fault applies once it is",
        ));
}

#[test]
fn kill_crashes_one_instance_and_it_comes_back() {
    let p = TestProject::sample_scaled(1, 3);
    p.up();
    let before = p.pid_of("posts-2").unwrap();
    p.msctl().args(["kill", "posts-2"]).assert().success();
    p.wait_until("posts-2 to be restarted", |p| {
        let i = p.instance("posts-2")?;
        (i["state"] == "healthy" && i["pid"].as_u64() != Some(u64::from(before))).then_some(())
    });
    assert_eq!(p.instance("posts-2").unwrap()["restarts"], 1);
    let out = p.msctl().args(["kill", "posts-9"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = p.msctl().args(["kill", "nosuch"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = p
        .msctl()
        .args(["fault", "posts", "--error-rate", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a rate from 0 to 1"));
    let out = p.msctl().args(["fault", "posts"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_readme_demo_runs_and_fails_no_request() {
    let p = TestProject::sample();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/resilience-demo.sh");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .env("MSCTL", bin("msctl"))
        .current_dir(p.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    assert!(
        stderr.contains("killed posts-2") && stderr.contains("posts scaled to 1"),
        "{stderr}"
    );
    let requests: u32 = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("== ")?
                .split_once(" requests")?
                .0
                .trim()
                .parse()
                .ok()
        })
        .expect("the demo counts its requests");
    assert!(requests > 10, "{stdout}");
}

#[test]
fn with_every_posts_instance_down_the_gateway_answers_partially_then_recovers() {
    let p = TestProject::sample_scaled(1, 3);
    p.up();
    let gateway = p.url_of("gateway-1");
    p.msctl().args(["stop", "posts"]).assert().success();
    let started = std::time::Instant::now();
    let (status, body) = get_json(&format!("{gateway}/users/1/posts"));
    assert_eq!(status, 200);
    assert_eq!(body["partial"], true, "{body}");
    assert_eq!(body["user"]["id"], 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    p.msctl().args(["start", "posts"]).assert().success();
    let (_, body) = get_json(&format!("{gateway}/users/1/posts"));
    assert!(
        body["posts"].is_array() && body.get("partial").is_none(),
        "{body}"
    );
}
