//! The message bus: users deletes people as fast as four clients ask, each deletion commits a
//! `user.deleted` event to its outbox, the relay sends it to nats-server (JetStream), and posts
//! applies it. Figures from the two databases: events per second from the first commit to the
//! last apply, and the commit → apply delay (p50, p99); then the same with the broker SIGKILLed
//! a third of the way through and restarted by msctl.

use crate::harness::*;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const EVENTS: usize = 3000;
const CLIENTS: usize = 4;

pub fn run(runs: usize) {
    let bins = release_bins();
    if msctl::supervisor::instance::find_program("nats-server", Path::new("/")).is_none() {
        eprintln!("the bus benchmark needs nats-server: apt-get install nats-server");
        std::process::exit(1);
    }
    println!(
        "the bus: {EVENTS} user deletions from {CLIENTS} clients, users → outbox → nats-server → posts; release builds; {runs} runs each"
    );
    let mut rows = Vec::new();
    for restart in [false, true] {
        for run in 1..=runs {
            let f = once(&bins, restart);
            rows.push(vec![
                if restart {
                    "broker SIGKILLed mid-run".to_string()
                } else {
                    "steady".to_string()
                },
                run.to_string(),
                format!("{:.0}", f.per_second),
                ms(f.p50),
                ms(f.p99),
                ms(f.max),
                f.applied_twice.to_string(),
            ]);
        }
    }
    print_table(
        &[
            "broker",
            "run",
            "events/s (commit → apply)",
            "delay p50",
            "p99",
            "max",
            "applied twice",
        ],
        &rows,
    );
}

struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    applied_twice: usize,
}

fn once(bins: &Path, restart: bool) -> Figures {
    let bin = |n: &str| bins.join(n).display().to_string();
    let system = Running::up(
        bins,
        &format!(
            r#"
[services.nats]
command = ["nats-server", "-a", "127.0.0.1", "-p", "{{port}}", "-js", "-sd", "{{data_dir}}"]
health = "tcp"

[services.users]
command = ["{}"]
env = {{ MSCTL_TRACE = "off" }}

[services.posts]
command = ["{}"]
env = {{ MSCTL_TRACE = "off" }}
"#,
            bin("users"),
            bin("posts")
        ),
    );
    let registry = system.registry();
    let users = registry["services"]["users"]["instances"][0]["address"]
        .as_str()
        .expect("users' address")
        .to_string();
    // The people to delete, made first (their `user.created` events flow before timing starts).
    let ids: Vec<u64> = {
        let mut conn = Conn::open(&users);
        (0..EVENTS)
            .map(|i| {
                let body = format!(r#"{{"name":"n{i}","email":"n{i}@example.com"}}"#);
                let answer = conn.send("POST", "/users", &body);
                let v: serde_json::Value = serde_json::from_str(&answer).expect("a user");
                v["id"].as_u64().expect("an id")
            })
            .collect()
    };
    std::thread::sleep(Duration::from_millis(500));
    let chunks: Vec<Vec<u64>> = ids.chunks(EVENTS / CLIENTS).map(|c| c.to_vec()).collect();
    let clients: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let users = users.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::open(&users);
                for id in chunk {
                    conn.send("DELETE", &format!("/users/{id}"), "");
                }
            })
        })
        .collect();
    if restart {
        // A third of the way: the broker dies; msctl restarts it (on a new port).
        let posts_db = system.dir.path().join(".msctl/data/posts/posts.db");
        let deadline = Instant::now() + Duration::from_secs(60);
        while applied(&posts_db).len() < EVENTS / 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let killed = Command::new(&system.msctl)
            .args(["kill", "nats"])
            .current_dir(system.dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(killed, "msctl kill nats failed");
    }
    for c in clients {
        c.join().expect("a client thread");
    }
    let posts_db = system.dir.path().join(".msctl/data/posts/posts.db");
    let users_db = system.dir.path().join(".msctl/data/users/users.db");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut done = applied(&posts_db);
    while done.len() < EVENTS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        done = applied(&posts_db);
    }
    assert!(
        done.len() >= EVENTS,
        "only {} of {EVENTS} events applied",
        done.len()
    );
    if std::env::var_os("BUS_KEEP_LOGS").is_some() {
        let _ = Command::new("cp")
            .arg("-r")
            .arg(system.dir.path().join(".msctl/logs"))
            .arg("/tmp/buslogs")
            .status();
    }
    let committed = committed(&users_db);
    let mut delays = Vec::new();
    let (mut first, mut last) = (u64::MAX, 0u64);
    let mut seen = std::collections::HashSet::new();
    let mut twice = 0;
    for (id, at) in &done {
        if !seen.insert(id.clone()) {
            twice += 1;
            continue;
        }
        if let Some(created) = committed.get(id) {
            first = first.min(*created);
            last = last.max(*at);
            delays.push(Duration::from_nanos(at.saturating_sub(*created)));
        }
    }
    delays.sort();
    let pick = |q: f64| delays[((delays.len() as f64 * q) as usize).min(delays.len() - 1)];
    Figures {
        per_second: delays.len() as f64 / ((last - first) as f64 / 1e9),
        p50: pick(0.5),
        p99: pick(0.99),
        max: *delays.last().expect("delays"),
        applied_twice: twice,
    }
}

/// posts' clean-ups: event id and when it was applied, in nanoseconds.
fn applied(db: &Path) -> Vec<(String, u64)> {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let _ = conn.busy_timeout(Duration::from_secs(2));
    let Ok(mut q) = conn.prepare("SELECT event_id, at_ns FROM clean_ups") else {
        return Vec::new();
    };
    q.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// users' committed `user.deleted` events: id → commit time in nanoseconds.
fn committed(db: &Path) -> std::collections::HashMap<String, u64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("users' database");
    let mut q = conn
        .prepare("SELECT id, created_ns FROM msctl_outbox WHERE subject = 'user.deleted'")
        .expect("the outbox");
    q.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
        .expect("rows")
        .filter_map(Result::ok)
        .collect()
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).expect("users answers");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            reader: BufReader::new(stream),
        }
    }

    /// Sends a request and returns the answer's body; panics on a non-2xx.
    fn send(&mut self, method: &str, path: &str, body: &str) -> String {
        use std::io::{BufRead, Read};
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("request sent");
        let mut line = String::new();
        let mut length = 0usize;
        let mut status = String::new();
        loop {
            line.clear();
            assert!(
                self.reader.read_line(&mut line).expect("answer") > 0,
                "closed"
            );
            if line.starts_with("HTTP/1.1 ") {
                status = line[9..12].to_string();
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut answer = vec![0u8; length];
        self.reader.read_exact(&mut answer).expect("body");
        assert!(status.starts_with('2'), "{method} {path}: {status}");
        String::from_utf8_lossy(&answer).into_owned()
    }
}
