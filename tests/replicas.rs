//! Replicas of one service share its database and keep answers they have read: what any
//! process commits is what every replica answers next, at once.

mod common;

use common::*;
use serde_json::{Value, json};

/// `url` asked `n` times, each on a new connection, so that every request thread of the
/// instance answers (and keeps) it; the answers' statuses and bodies, all of which must agree.
fn asked(url: &str, n: usize) -> (u16, Value) {
    let answers: Vec<(u16, Value)> = (0..n).map(|_| get_json(url)).collect();
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "one instance answered {url} differently: {answers:#?}"
    );
    answers[0].clone()
}

#[test]
fn a_commit_by_one_replica_or_another_process_is_read_at_once_by_every_replica() {
    let p = TestProject::sample_scaled(2, 2);
    p.up();
    let pids: Vec<Option<u32>> = ["users-1", "users-2", "posts-1", "posts-2"]
        .iter()
        .map(|id| p.pid_of(id))
        .collect();
    let (users1, users2) = (p.url_of("users-1"), p.url_of("users-2"));
    let (posts1, posts2) = (p.url_of("posts-1"), p.url_of("posts-2"));
    let client = http();

    // A user created through one replica, read (and kept) by the other, deleted through the
    // first: the second answers 404 on its very next request.
    let created = client
        .post(format!("{users1}/users"))
        .json(&json!({"name": "Kept Briefly", "email": "kept@example.com"}))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().unwrap()["id"].as_i64().unwrap();
    let (status, user) = asked(&format!("{users2}/users/{id}"), 8);
    assert_eq!((status, user["name"].as_str()), (200, Some("Kept Briefly")));
    let deleted = client
        .delete(format!("{users1}/users/{id}"))
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let (status, body) = asked(&format!("{users2}/users/{id}"), 8);
    assert_eq!(status, 404, "{body}");

    // A row changed behind the services' backs, by a process that is none of them.
    let (status, user) = asked(&format!("{users1}/users/3"), 8);
    assert_eq!((status, user["name"].as_str()), (200, Some("Grace Hopper")));
    let db = rusqlite::Connection::open(p.path().join(".msctl/data/users/users.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute("UPDATE users SET name = 'Admiral Hopper' WHERE id = 3", [])
        .unwrap();
    for users in [&users1, &users2] {
        let (_, user) = asked(&format!("{users}/users/3"), 8);
        assert_eq!(user["name"], "Admiral Hopper", "{users}");
    }

    // A page of posts kept by one replica, then a post created through the other: the page,
    // asked again, has it.
    let page = format!("{posts2}/posts?user_id=2&limit=100");
    let (_, before) = asked(&page, 8);
    let created = client
        .post(format!("{posts1}/posts"))
        .json(&json!({"user_id": 2, "title": "Fresh", "body": "read at once"}))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    let (_, after) = asked(&page, 8);
    assert_eq!(
        after["total"].as_i64(),
        before["total"].as_i64().map(|n| n + 1),
        "{after}"
    );
    assert!(
        after["posts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|post| post["title"] == "Fresh"),
        "{after}"
    );

    // Nothing here may have cost an instance its life: not another process opening the
    // databases the instances watch (were a WAL-index reset under them, they would die of
    // SIGBUS and be restarted).
    let now: Vec<Option<u32>> = ["users-1", "users-2", "posts-1", "posts-2"]
        .iter()
        .map(|id| p.pid_of(id))
        .collect();
    assert_eq!(now, pids, "an instance was restarted");
}
