//! Failure on purpose, under a steady stream of requests: what users of the system see.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn killing_one_of_three_posts_replicas_fails_no_request() {
    let p = TestProject::new(
        r#"
[services.users]
command = ["{bin}/users"]

[services.posts]
command = ["{bin}/posts"]
replicas = 3

[services.gateway]
command = ["{bin}/gateway"]
depends_on = ["users", "posts"]
"#,
    );
    p.up();
    let gateway = p.url_of("gateway-1");
    let load = Load::start(vec![
        format!("{gateway}/posts/1"),
        format!("{gateway}/users/1/posts"),
        format!("{gateway}/posts?limit=5"),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let victim = p.pid_of("posts-2").expect("posts-2 runs");
    signal(victim, nix::sys::signal::Signal::SIGKILL);
    // It dies, is restarted, and comes back into rotation while the stream goes on.
    p.wait_until("posts-2 to be back", |p| {
        let back = p.instance("posts-2")?;
        (back["state"] == "healthy" && back["pid"].as_u64() != Some(u64::from(victim)))
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let answers = load.stop();
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
fn restarting_the_only_users_instance_fails_no_request() {
    let p = TestProject::sample();
    p.up();
    let gateway = p.url_of("gateway-1");
    let before = p.pid_of("users-1").expect("users-1 runs");
    let load = Load::start(vec![
        format!("{gateway}/users/1"),
        format!("{gateway}/users/1/posts"),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    p.msctl().args(["restart", "users"]).assert().success();
    std::thread::sleep(Duration::from_millis(500));
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
    assert!(
        answers.len() > 50,
        "only {} requests were sent",
        answers.len()
    );
    let failed: Vec<_> = answers
        .iter()
        .filter(|(_, status, _)| !(200..300).contains(status))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:#?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
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
    let load = Load::start(vec![
        format!("{gateway}/posts/1"),
        format!("{gateway}/users/1/posts"),
    ]);
    p.msctl().args(["scale", "posts=3"]).assert().success();
    for id in ["posts-1", "posts-2", "posts-3"] {
        assert_eq!(p.instance(id).expect(id)["state"], "healthy", "{id}");
    }
    std::thread::sleep(Duration::from_millis(500));
    p.msctl().args(["scale", "posts=-1"]).assert().success();
    assert!(
        p.instance("posts-3").is_none(),
        "posts-3 was drained and removed"
    );
    p.msctl().args(["scale", "posts=1"]).assert().success();
    std::thread::sleep(Duration::from_millis(300));
    let answers = load.stop();
    let registry = p.registry().unwrap();
    let left: Vec<&str> = registry["services"]["posts"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(left, ["posts-1"]);
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
