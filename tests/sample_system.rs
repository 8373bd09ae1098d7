//! The sample system's three real binaries, started by hand (no msctl) on free loopback ports and
//! wired through `*_URL` variables, as a service runs outside msctl.

mod common;

use common::{Children, bin, get_json, http, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts `name` into `children` (at `slot`, or at the end), so that it is killed even when it
/// never answers, then waits until it does.
fn start(
    children: &mut Children,
    slot: Option<usize>,
    name: &str,
    port: u16,
    data: &Path,
    peers: &[(&str, u16)],
) {
    let mut cmd = Command::new(bin(name));
    cmd.env("PORT", port.to_string())
        .env("MSCTL_DATA_DIR", data.join(name))
        .env_remove("MSCTL_REGISTRY")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (peer, peer_port) in peers {
        cmd.env(
            format!("{}_URL", peer.to_uppercase()),
            format!("http://127.0.0.1:{peer_port}"),
        );
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{name} starts: {e}"));
    match slot {
        Some(i) => children.0[i] = child,
        None => children.0.push(child),
    }
    wait_until(
        Duration::from_secs(10),
        &format!("{name} to answer /health"),
        || {
            http()
                .get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        },
    );
}

fn sigterm_and_wait(child: &mut Child) -> std::process::ExitStatus {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("signal sent");
    wait_until(Duration::from_secs(10), "the service to exit", || {
        child.try_wait().expect("wait works")
    })
}

#[test]
fn the_three_services_work_together_without_msctl() {
    let data = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3)
        .map(|_| portpicker::pick_unused_port().expect("a free port"))
        .collect();
    let (users, posts, gateway) = (ports[0], ports[1], ports[2]);
    let mut children = Children::default();
    start(&mut children, None, "users", users, data.path(), &[]);
    let posts_peers = [("users", users)];
    start(
        &mut children,
        None,
        "posts",
        posts,
        data.path(),
        &posts_peers,
    );
    let gateway_peers = [("users", users), ("posts", posts)];
    start(
        &mut children,
        None,
        "gateway",
        gateway,
        data.path(),
        &gateway_peers,
    );
    let gw = format!("http://127.0.0.1:{gateway}");

    // The combined answer.
    let (status, body) = get_json(&format!("{gw}/users/1/posts"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["name"], "Ada Lovelace");
    assert_eq!(body["posts"].as_array().unwrap().len(), 3);

    // A POST through the gateway is visible in a later GET.
    let created: serde_json::Value = http()
        .post(format!("{gw}/posts"))
        .json(&json!({"user_id": 1, "title": "Kept across restarts", "body": "..."}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = created["id"].as_i64().expect("an id");
    let (status, body) = get_json(&format!("{gw}/posts/{id}"));
    assert_eq!(
        (status, body["title"].as_str()),
        (200, Some("Kept across restarts"))
    );

    // posts exits cleanly on SIGTERM, and its data survives the restart.
    let status = sigterm_and_wait(&mut children.0[1]);
    assert_eq!(status.code(), Some(0), "posts exits 0 on SIGTERM");
    start(
        &mut children,
        Some(1),
        "posts",
        posts,
        data.path(),
        &posts_peers,
    );
    let (status, body) = get_json(&format!("{gw}/posts/{id}"));
    assert_eq!(
        (status, body["title"].as_str()),
        (200, Some("Kept across restarts"))
    );
    let (_, body) = get_json(&format!("{gw}/users/1/posts"));
    assert_eq!(body["posts"].as_array().unwrap().len(), 4);

    // With posts killed, the gateway still answers with the user, marked partial.
    children.0[1].kill().unwrap();
    children.0[1].wait().unwrap();
    let (status, body) = get_json(&format!("{gw}/users/1/posts"));
    assert_eq!(status, 200);
    assert_eq!(body["partial"], true);
    assert!(body["posts"].is_null());
    assert_eq!(body["errors"][0]["service"], "posts");

    // And with users gone, the gateway names users in a 503.
    let status = sigterm_and_wait(&mut children.0[0]);
    assert_eq!(status.code(), Some(0));
    let (status, body) = get_json(&format!("{gw}/users/1/posts"));
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("users"));

    let status = sigterm_and_wait(&mut children.0[2]);
    assert_eq!(status.code(), Some(0), "the gateway exits 0 on SIGTERM");
}
