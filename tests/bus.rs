//! The message bus with a real broker (nats-server, which msctl runs as the service `nats`):
//! users publishes through its outbox, posts consumes durably and applies each event once.
//! Broker down, consumer down, broker killed mid-stream, publisher killed before relaying:
//! nothing is lost, and nothing is applied twice.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::time::Duration;

/// How long events may take to flow once everything is up.
const FLOW: Duration = Duration::from_secs(60);

fn system() -> TestProject {
    let p = TestProject::sample_with_bus();
    p.up();
    p
}

fn delete_user(p: &TestProject, id: u64) {
    let users = p.url_of("users-1");
    let status = http()
        .delete(format!("{users}/users/{id}"))
        .send()
        .expect("users answers")
        .status();
    assert_eq!(status.as_u16(), 204, "deleting user {id}");
}

/// How many posts `user` has, asked of posts.
fn posts_of(p: &TestProject, user: u64) -> u64 {
    let (status, body) = get_json(&format!("{}/posts?user_id={user}", p.url_of("posts-1")));
    assert_eq!(status, 200, "{body}");
    body["total"].as_u64().expect("a total")
}

/// The ids of the `user.deleted` events users committed, and how many it has relayed.
fn deletions(p: &TestProject) -> (BTreeSet<String>, usize) {
    let db = service_db(p, "users", "users.db");
    let mut q = db
        .prepare(
            "SELECT id, relayed_ns IS NOT NULL FROM msctl_outbox WHERE subject = 'user.deleted'",
        )
        .unwrap();
    let rows: Vec<(String, bool)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let relayed = rows.iter().filter(|(_, r)| *r).count();
    (rows.into_iter().map(|(id, _)| id).collect(), relayed)
}

/// The event ids posts has cleaned up after, once per time it did so.
fn clean_ups(p: &TestProject) -> Vec<String> {
    let db = service_db(p, "posts", "posts.db");
    let mut q = db
        .prepare("SELECT event_id FROM clean_ups ORDER BY id")
        .unwrap();
    q.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Every committed deletion was applied by posts exactly once.
fn assert_each_applied_once(p: &TestProject, expected: usize) {
    let (committed, _) = deletions(p);
    assert_eq!(committed.len(), expected, "deletions committed by users");
    let applied = wait_until(FLOW, "every deletion to be applied", || {
        let applied = clean_ups(p);
        (applied.len() >= expected).then_some(applied)
    });
    let distinct: BTreeSet<String> = applied.iter().cloned().collect();
    assert_eq!(
        applied.len(),
        distinct.len(),
        "an event was applied more than once"
    );
    assert_eq!(distinct, committed, "applied events are the committed ones");
    // Nothing more arrives later either.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        clean_ups(p).len(),
        expected,
        "an event was applied again later"
    );
}

#[test]
fn a_user_deleted_while_posts_is_down_loses_their_posts_once_posts_is_back() {
    let p = system();
    assert_eq!(posts_of(&p, 3), 3);
    p.msctl().args(["stop", "posts"]).assert().success();
    delete_user(&p, 3);
    // Relayed to the broker, which keeps it for the durable consumer.
    wait_until(FLOW, "the event to be relayed", || {
        (deletions(&p).1 == 1).then_some(())
    });
    p.msctl().args(["start", "posts"]).assert().success();
    wait_until(FLOW, "user 3's posts to be removed", || {
        (posts_of(&p, 3) == 0).then_some(())
    });
    assert_eq!(posts_of(&p, 4), 3, "other users' posts stay");
    assert_each_applied_once(&p, 1);
}

#[test]
fn users_deleted_while_the_broker_is_down_arrive_when_it_is_back() {
    let p = system();
    p.msctl().args(["stop", "nats"]).assert().success();
    for id in 1..=5 {
        delete_user(&p, id);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (committed, relayed) = deletions(&p);
    assert_eq!((committed.len(), relayed), (5, 0), "held in the outbox");
    assert_eq!(posts_of(&p, 1), 3, "not applied without a broker");
    p.msctl().args(["start", "nats"]).assert().success();
    wait_until(FLOW, "every user's posts to be removed", || {
        (1..=5).all(|id| posts_of(&p, id) == 0).then_some(())
    });
    assert_each_applied_once(&p, 5);
}

#[test]
fn killing_the_broker_in_a_stream_of_1000_events_loses_none_and_doubles_none() {
    let p = system();
    let users = p.url_of("users-1");
    let client = http();
    let ids: Vec<u64> = (0..1000)
        .map(|i| {
            let answer = client
                .post(format!("{users}/users"))
                .json(&serde_json::json!({"name": format!("n{i}"), "email": format!("n{i}@example.com")}))
                .send()
                .expect("users answers");
            assert_eq!(answer.status().as_u16(), 201);
            answer.json::<serde_json::Value>().unwrap()["id"].as_u64().unwrap()
        })
        .collect();
    let deleter = {
        let users = users.clone();
        std::thread::spawn(move || {
            let client = http();
            for id in ids {
                let status = client
                    .delete(format!("{users}/users/{id}"))
                    .send()
                    .expect("users answers")
                    .status();
                assert_eq!(status.as_u16(), 204);
            }
        })
    };
    // Mid-stream: some events applied, the rest still coming.
    wait_until(FLOW, "some events to be applied", || {
        (clean_ups(&p).len() >= 200).then_some(())
    });
    let broker = p.pid_of("nats-1").expect("the broker runs");
    signal(broker, Signal::SIGKILL);
    p.wait_until("the broker to be back", |p| {
        let i = p.instance("nats-1")?;
        (i["state"] == "healthy" && i["pid"].as_u64() != Some(u64::from(broker))).then_some(())
    });
    deleter.join().expect("every deletion answered");
    assert_each_applied_once(&p, 1000);
}

#[test]
fn an_event_committed_but_not_relayed_is_relayed_after_users_is_killed() {
    let p = system();
    p.msctl().args(["stop", "nats"]).assert().success();
    delete_user(&p, 4);
    assert_eq!(deletions(&p).1, 0, "not relayed: no broker");
    // Killed between the commit and the relay.
    let killed = p.pid_of("users-1").expect("users runs");
    signal(killed, Signal::SIGKILL);
    p.wait_until("users to be back", |p| {
        let i = p.instance("users-1")?;
        (i["state"] == "healthy" && i["pid"].as_u64() != Some(u64::from(killed))).then_some(())
    });
    p.msctl().args(["start", "nats"]).assert().success();
    wait_until(FLOW, "user 4's posts to be removed", || {
        (posts_of(&p, 4) == 0).then_some(())
    });
    assert_each_applied_once(&p, 1);
}

#[test]
fn a_deletion_is_one_trace_through_users_the_event_and_posts() {
    let p = system();
    let answer = p.json(&["call", "--json", "DELETE", "users/5"]);
    assert_eq!(answer["status"], 204, "{answer}");
    let id = answer["trace_id"].as_str().unwrap().to_string();
    let spans = wait_until(FLOW, "the consumer's span in the trace", || {
        trace_spans(&p, &id).filter(|s| s.iter().any(|s| s["kind"] == 5))
    });
    let services = services_of(&spans);
    for s in ["gateway", "users", "posts"] {
        assert!(services.contains(&s), "{s} in {services:?}");
    }
    let named = |name: &str| {
        spans
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no span {name}: {spans:#?}"))
    };
    let create = named("create user.deleted");
    let send = named("send user.deleted");
    let process = named("process user.deleted");
    assert_eq!(
        [&create["kind"], &send["kind"], &process["kind"]],
        [4, 4, 5],
        "kinds: PRODUCER, PRODUCER, CONSUMER"
    );
    assert_eq!(process["attributes"]["messaging.system"], "nats");
    assert_eq!(
        process["attributes"]["messaging.destination.name"],
        "user.deleted"
    );
    // The chain: the deletion's span → create → send → process → posts' own DELETE.
    assert_eq!(send["parentSpanId"], create["spanId"]);
    assert_eq!(process["parentSpanId"], send["spanId"]);
    assert!(
        spans
            .iter()
            .any(|s| s["parentSpanId"] == process["spanId"]
                && s["resource"]["service.name"] == "posts"),
        "posts' clean-up is inside the consumer span"
    );
    // The waterfall shows it, consumer last.
    let out = p.msctl().args(["trace", &id]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {text}"))
    };
    assert!(at("users DELETE /users/{id}") < at("create user.deleted"));
    assert!(at("send user.deleted") < at("process user.de"));
}

#[test]
fn up_without_the_broker_installed_starts_the_rest_and_warns() {
    // msctl also looks in the sbin folders, where Debian installs nats-server, so a PATH
    // without it would not hide an installed one: the program is named where it is not.
    let p = TestProject::new(&format!("{SAMPLE}{BROKER}").replace(
        r#"command = ["nats-server","#,
        r#"command = ["/nonexistent/nats-server","#,
    ));
    let out = p.msctl().args(["up", "-d"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("nats is absent").count(),
        1,
        "warned once: {stderr}"
    );
    assert!(stderr.contains("apt-get install nats-server"), "{stderr}");
    assert_eq!(p.instance("nats-1").unwrap()["state"], "absent");
    for id in ["users-1", "posts-1", "gateway-1"] {
        assert_eq!(p.instance(id).unwrap()["state"], "healthy", "{id}");
    }
    // `health` says the broker is absent and still passes; the system serves, and a deletion
    // waits in the outbox.
    let health = p.msctl().arg("health").output().unwrap();
    assert!(health.status.success());
    assert!(String::from_utf8_lossy(&health.stdout).contains("absent"));
    let ps = p.msctl().arg("ps").output().unwrap();
    assert!(String::from_utf8_lossy(&ps.stdout).contains("absent"));
    let (status, _) = get_json(&format!("{}/users/1/posts", p.url_of("gateway-1")));
    assert_eq!(status, 200);
    delete_user(&p, 2);
    let (committed, relayed) = deletions(&p);
    assert_eq!((committed.len(), relayed), (1, 0), "kept in the outbox");
}

/// `msctl events --json`, parsed.
fn events(p: &TestProject, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = p
        .msctl()
        .args(["events", "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success());
    stdout_json(&out).as_array().cloned().unwrap_or_default()
}

#[test]
fn events_shows_an_event_pending_in_the_outbox_then_applied() {
    let p = system();
    p.msctl().args(["stop", "nats"]).assert().success();
    let mut follow = Children::default();
    follow.0.push(
        p.msctl_process()
            .args(["events", "-f", "--json", "--subject", "user.*"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lines = {
        use std::io::BufRead;
        let stdout = std::io::BufReader::new(follow.0[0].stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    // The follower's next line for the event with `state`.
    let next_state = |id: Option<&str>, state: &str| loop {
        let line = lines.recv_timeout(FLOW).expect("a line from events -f");
        let e: serde_json::Value = serde_json::from_str(&line).unwrap();
        if e["state"] == state && id.is_none_or(|id| e["id"] == id) {
            return e;
        }
    };
    delete_user(&p, 6);
    let pending = next_state(None, "pending");
    assert_eq!(pending["subject"], "user.deleted");
    assert_eq!(pending["publisher"], "users");
    let id = pending["id"].as_str().unwrap().to_string();
    let listed = events(&p, &[]);
    assert!(
        listed
            .iter()
            .any(|e| e["id"] == id.as_str() && e["state"] == "pending"),
        "{listed:?}"
    );
    p.msctl().args(["start", "nats"]).assert().success();
    let followed = next_state(Some(&id), "applied");
    assert_eq!(followed["applied_by"], serde_json::json!(["posts"]));
    let applied = events(&p, &[])
        .into_iter()
        .find(|e| e["id"] == id.as_str())
        .unwrap();
    assert_eq!(applied["state"], "applied");
    assert_eq!(applied["trace_id"], pending["trace_id"]);
    assert!(applied["delay_ms"].as_f64().unwrap() > 0.0);
    assert!(events(&p, &["--subject", "user.created"]).is_empty());
}
