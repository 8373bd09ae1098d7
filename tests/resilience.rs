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
