//! Tracing cost: gateway throughput for `GET /users/1/posts` with tracing off, on as shipped
//! (each instance starts at most `MSCTL_TRACES_PER_SECOND` traces a second, then samples), and
//! with every request recorded (`OTEL_TRACES_SAMPLER=parentbased_always_on`), with and without
//! the export of log records; how many requests were recorded, and what `msctl top` counts
//! from them; the time of `msctl call users/1/posts` against curl on the same URL; then the
//! `telemetry` figures (queries over 100,000 stored spans, the receiver's intake), so that one
//! run prints all that tracing costs.

use crate::harness::*;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 32;
/// The measured part of one variant's turn in a round.
const ROUND: Duration = Duration::from_secs(2);
/// Load before the measured part of a turn: connections open, caches and batches warm, the
/// sampler past its first window. Throughput is what a running system sustains.
const WARM_UP: Duration = Duration::from_millis(500);
/// This machine's speed drifts by a fifth between minutes, so the variants run side by side,
/// each system up for the whole run, and take short turns under load: many rounds of close
/// turns compare like with like where a few long ones cannot.
const ROUNDS: usize = 21;
/// The longest wait for the systems to fall quiet before a turn.
const SETTLE: Duration = Duration::from_secs(5);

/// How each round runs the sample: its name, and the environment every service gets.
const VARIANTS: [(&str, &str); 4] = [
    ("off", "MSCTL_TRACE = \"off\""),
    ("on (as shipped)", "MSCTL_TRACE = \"on\""),
    (
        "on, every request",
        "MSCTL_TRACE = \"on\", OTEL_TRACES_SAMPLER = \"parentbased_always_on\"",
    ),
    (
        "on, every request, log records to stdout only",
        "MSCTL_TRACE = \"on\", OTEL_TRACES_SAMPLER = \"parentbased_always_on\", OTEL_LOGS_EXPORTER = \"none\"",
    ),
];

/// The sample system under msctl with `env` for every service.
fn sample(bins: &Path, env: &str) -> Running {
    let bin = |n: &str| bins.join(n).display().to_string();
    Running::up(
        bins,
        &format!(
            "[defaults]\nenv = {{ {env} }}\n\n[services.users]\ncommand = [\"{}\"]\n\n[services.posts]\ncommand = [\"{}\"]\n\n[services.gateway]\ncommand = [\"{}\"]\ndepends_on = [\"users\", \"posts\"]\n",
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

/// One round's figures: requests per second, and CPU per 1,000 requests of the services and of
/// the supervisor (which receives and stores the telemetry).
struct Round {
    rps: f64,
    services_ms: f64,
    supervisor_ms: f64,
    /// When the turn began (ns since the epoch), and the requests sent, warm-up included.
    began_ns: u64,
    sent: u64,
    /// The gateway's server spans stored from the turn, and the requests they stand for:
    /// counted once the systems are quiet again, before the store trims its oldest.
    recorded: usize,
    counted: f64,
}

fn round(system: &Running) -> Round {
    let (supervisor, instances) = system.pids();
    let cpu = |pids: &[u32]| pids.iter().map(|p| cpu_time(*p)).sum::<Duration>();
    let (s0, i0) = (cpu(&[supervisor]), cpu(&instances));
    let began_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let (rps, count) = throughput(gateway(system));
    let (s1, i1) = (cpu(&[supervisor]), cpu(&instances));
    let per_1k = |d: Duration| d.as_secs_f64() * 1000.0 * 1000.0 / count.max(1) as f64;
    Round {
        rps,
        services_ms: per_1k(i1 - i0),
        supervisor_ms: per_1k(s1 - s0),
        began_ns,
        sent: count,
        recorded: 0,
        counted: 0.0,
    }
}

/// Waits until no system is busy: after a turn that recorded every request, its services'
/// batches and its supervisor's store take a while, and the next turn must not pay for them.
fn settle(systems: &[Running]) {
    let pids: Vec<u32> = systems
        .iter()
        .flat_map(|s| {
            let (supervisor, instances) = s.pids();
            std::iter::once(supervisor).chain(instances)
        })
        .collect();
    let busy = || pids.iter().map(|p| cpu_time(*p)).sum::<Duration>();
    let (start, tick) = (Instant::now(), Duration::from_millis(250));
    let mut before = busy();
    while start.elapsed() < SETTLE {
        std::thread::sleep(tick);
        let now = busy();
        // Under a twentieth of a core between ticks: quiet.
        if now.saturating_sub(before) < tick / 20 {
            return;
        }
        before = now;
    }
}

/// Counts what `system` stored from its last turn, `turn`: nothing of a later one is there yet.
fn count_stored(system: &Running, turn: &mut Round) {
    let spans: Vec<_> =
        msctl::telemetry::store::Store::open_read(&system.dir.path().join(".msctl/telemetry.db"))
            .and_then(|s| s.server_spans_since(turn.began_ns).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.service == "gateway" && s.name.contains("/users/"))
            .collect();
    turn.recorded = spans.len();
    turn.counted = spans.iter().map(|s| s.weight).sum();
}

fn count_last(systems: &[Running], rounds: &mut [Vec<Round>], last: Option<usize>) {
    if let Some(v) = last
        && let Some(turn) = rounds[v].last_mut()
    {
        count_stored(&systems[v], turn);
    }
}

/// Spans `system`'s receiver dropped because the store could not keep up.
fn dropped(system: &Running) -> u64 {
    msctl::telemetry::store::Store::open_read(&system.dir.path().join(".msctl/telemetry.db"))
        .map_or(0, |s| s.counter(msctl::telemetry::receiver::DROPPED))
}

/// Requests per second over keep-alive connections for `ROUND`, and how many were answered
/// from the first request to the last, warm-up included.
fn throughput(addr: SocketAddr) -> (f64, u64) {
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
    std::thread::sleep(WARM_UP);
    let before = done.load(Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(ROUND);
    let count = done.load(Ordering::Relaxed) - before;
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    (count as f64 / secs, done.load(Ordering::Relaxed))
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
        "tracing cost: gateway GET /users/1/posts, {CONNECTIONS} keep-alive connections; the {} variants up side by side, {ROUNDS} rounds of a turn each ({ROUND:?} measured after {WARM_UP:?} of warm-up; off and on as shipped in alternating order) (release binaries)\n",
        VARIANTS.len()
    );
    let systems: Vec<Running> = VARIANTS.iter().map(|(_, env)| sample(&bins, env)).collect();
    let mut rounds: Vec<Vec<Round>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    let mut last_turn = None;
    for n in 0..ROUNDS {
        // off, on, ... then on, off, ...: a drift over the run favours neither.
        let order: &[usize] = if n % 2 == 0 {
            &[0, 1, 2, 3]
        } else {
            &[1, 0, 2, 3]
        };
        for &v in order {
            settle(&systems);
            count_last(&systems, &mut rounds, last_turn);
            rounds[v].push(round(&systems[v]));
            last_turn = Some(v);
        }
    }
    settle(&systems);
    count_last(&systems, &mut rounds, last_turn);
    let dropped: Vec<u64> = systems.iter().map(dropped).collect();
    drop(systems);
    let med = |v: &[Round], f: fn(&Round) -> f64| {
        let mut xs: Vec<f64> = v.iter().map(f).collect();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let row = |name: &str, v: &[Round], dropped: u64| {
        let sent: u64 = v.iter().map(|r| r.sent).sum();
        let recorded: usize = v.iter().map(|r| r.recorded).sum();
        let counted: f64 = v.iter().map(|r| r.counted).sum();
        vec![
            name.to_string(),
            format!("{:.0}", med(v, |r| r.rps)),
            format!("{:.0} ms", med(v, |r| r.services_ms)),
            format!("{:.0} ms", med(v, |r| r.supervisor_ms)),
            if recorded == 0 {
                "-".into()
            } else {
                format!(
                    "{:.1}% ({recorded} of {sent})",
                    recorded as f64 * 100.0 / sent.max(1) as f64
                )
            },
            if recorded == 0 {
                "-".into()
            } else {
                format!("{:.2}", counted / sent.max(1) as f64)
            },
            dropped.to_string(),
        ]
    };
    print_table(
        &[
            "tracing",
            "requests/s (median)",
            "services' CPU / 1k requests",
            "supervisor's CPU / 1k requests",
            "requests recorded",
            "counted by top / sent",
            "spans dropped at intake",
        ],
        &VARIANTS
            .iter()
            .zip(&rounds)
            .zip(&dropped)
            .map(|(((name, _), v), dropped)| row(name, v, *dropped))
            .collect::<Vec<_>>(),
    );
    // A round's ratio compares turns taken seconds apart; the median of the rounds' is the figure.
    let ratio = |i: usize| {
        let mut xs: Vec<f64> = rounds[i]
            .iter()
            .zip(&rounds[0])
            .map(|(on, off)| on.rps / off.rps)
            .collect();
        xs.sort_by(f64::total_cmp);
        let all: Vec<String> = xs.iter().map(|x| format!("{x:.2}")).collect();
        (xs[xs.len() / 2], all.join(" "))
    };
    let (shipped, each) = ratio(1);
    println!("ratio on (as shipped) / off: {shipped:.3}   (target >= 0.90; rounds: {each})");
    let (every, each) = ratio(2);
    println!(
        "ratio on, every request / off: {every:.3}   (what recording every request costs; rounds: {each})"
    );
    let (no_logs, each) = ratio(3);
    println!(
        "ratio on, every request, log records to stdout only / off: {no_logs:.3}   (less what exporting log records costs; rounds: {each})\n"
    );

    crate::proxy::ensure("curl", "curl");
    let system = sample(&bins, VARIANTS[1].1);
    let url = format!("http://{}/users/1/posts", gateway(&system));
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
    // The store's side in the same go: queries over 100,000 spans, and the receiver's intake.
    println!();
    crate::telemetry::run(runs);
}
