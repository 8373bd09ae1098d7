//! Tracing cost: gateway throughput for `GET /users/1/posts` with tracing on and off, and the
//! time of `msctl call users/1/posts` against curl on the same URL.

use crate::harness::*;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 32;
const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;

/// The sample system under msctl with `MSCTL_TRACE` set to `trace`.
fn sample(bins: &Path, trace: &str) -> Running {
    let bin = |n: &str| bins.join(n).display().to_string();
    Running::up(
        bins,
        &format!(
            "[defaults]\nenv = {{ MSCTL_TRACE = \"{trace}\" }}\n\n[services.users]\ncommand = [\"{}\"]\n\n[services.posts]\ncommand = [\"{}\"]\n\n[services.gateway]\ncommand = [\"{}\"]\ndepends_on = [\"users\", \"posts\"]\n",
            bin("users"),
            bin("posts"),
            bin("gateway")
        ),
    )
}

/// The gateway's address.
fn gateway(system: &Running) -> SocketAddr {
    system.registry()["services"]["gateway"]["instances"][0]["address"]
        .as_str()
        .expect("address")
        .parse()
        .expect("socket address")
}

/// Requests per second over keep-alive connections for `ROUND`.
fn throughput(addr: SocketAddr) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let request = format!("GET /users/1/posts HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (done, stop, request) = (done.clone(), stop.clone(), request.clone());
            std::thread::spawn(move || {
                let stream = TcpStream::connect(addr).expect("connects");
                let mut writer = stream.try_clone().expect("clones");
                let mut reader = BufReader::new(stream);
                while !stop.load(Ordering::Relaxed) {
                    if writer.write_all(request.as_bytes()).is_err() || !read_response(&mut reader)
                    {
                        panic!("a request failed during the load");
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = done.load(Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(ROUND);
    let count = done.load(Ordering::Relaxed) - before;
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    count as f64 / secs
}

fn time_command(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let ok = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{cmd:?} failed");
    start.elapsed()
}

pub fn run(runs: usize) {
    let bins = release_bins();
    println!(
        "tracing cost: gateway GET /users/1/posts, {CONNECTIONS} keep-alive connections, {ROUNDS} alternating rounds of {ROUND:?} each (release binaries)\n"
    );
    let mut on = Vec::new();
    let mut off = Vec::new();
    for _ in 0..ROUNDS {
        for (trace, out) in [("off", &mut off), ("on", &mut on)] {
            let system = sample(&bins, trace);
            out.push(throughput(gateway(&system)));
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on, off) = (med(&mut on), med(&mut off));
    print_table(
        &["tracing", "requests/s (median)"],
        &[
            vec!["off".into(), format!("{off:.0}")],
            vec!["on".into(), format!("{on:.0}")],
        ],
    );
    println!("ratio on/off: {:.3}   (target >= 0.90)\n", on / off);

    let system = sample(&bins, "on");
    let url = format!("http://{}/users/1/posts", gateway(&system));
    let curl = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !curl {
        println!("curl is not installed: skipping msctl call against curl");
        return;
    }
    let mut call = Vec::new();
    let mut direct = Vec::new();
    for _ in 0..runs.max(10) * 3 {
        call.push(time_command(
            Command::new(&system.msctl)
                .args(["call", "users/1/posts"])
                .current_dir(system.dir.path()),
        ));
        direct.push(time_command(Command::new("curl").args([
            "-s",
            "-o",
            "/dev/null",
            "--fail",
            &url,
        ])));
    }
    let (call, direct) = (median(call), median(direct));
    print_table(
        &["command", "median wall time"],
        &[
            vec!["curl -s URL".into(), ms(direct)],
            vec!["msctl call users/1/posts".into(), ms(call)],
        ],
    );
    println!(
        "ratio msctl call / curl: {:.2}   (target <= 1.5)",
        call.as_secs_f64() / direct.as_secs_f64()
    );
}
