//! The data path against nginx and a bare server: `GET /users/1` on a bare axum server, on
//! users directly, through nginx (a keep-alive reverse proxy to the same users instance),
//! through a bare hyper proxy (the limit of the gateway's stack) and through the gateway;
//! `/users/1/posts` through the gateway; and last through nginx with its access log on, as the
//! gateway's is. It prints throughput, p50 and p99 by wrk, the CPU time each server on the path
//! and the machine as a whole spend per request, and the services' peak memory. Tracing and access logs are on, as
//! shipped.

use crate::harness::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// wrk's settings, the same for every path.
const THREADS: u32 = 2;
const CONNECTIONS: u32 = 32;
const SECONDS: u32 = 3;
/// Every path is measured once a round, in turn, the order reversed every other round. This
/// machine's speed drifts by a fifth between minutes: one long run of each path compared paths
/// measured minutes apart, and single-run ratios moved by as much as the targets ask.
const ROUNDS: usize = 5;

pub(crate) struct Figures {
    pub(crate) rps: f64,
    /// How many requests wrk completed in the run.
    requests: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// A program the benchmark needs, installed from Debian's packages when missing and possible.
pub(crate) fn ensure(program: &str, package: &str) {
    let found = |p: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if found(program) {
        return;
    }
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq", package])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found(program),
        "`{program}` is needed; install it with `apt-get install {package}`"
    );
}

/// Runs wrk against `url` and reads its figures.
pub(crate) fn wrk(url: &str) -> Figures {
    let out = Command::new("wrk")
        .args([
            &format!("-t{THREADS}"),
            &format!("-c{CONNECTIONS}"),
            &format!("-d{SECONDS}s"),
            "--latency",
            url,
        ])
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "requests to {url} failed:\n{text}"
    );
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"));
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(f64::NAN);
    Figures {
        rps,
        requests,
        p50_ms: field("50%").map(millis).unwrap_or(f64::NAN),
        p99_ms: field("99%").map(millis).unwrap_or(f64::NAN),
    }
}

/// wrk's `1.23ms`, `456.00us` or `1.20s`, in milliseconds.
fn millis(v: &str) -> f64 {
    let (number, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * scale)
}

/// A child process stopped when dropped: SIGTERM, so that nginx's master takes its workers with
/// it, then SIGKILL if it is still there after two seconds.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..200 {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The CPU time, user and system, that process `pid` and its threads have used so far.
/// `pid` and its child processes: nginx's master and its workers.
fn with_children(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    for (child, dir) in processes() {
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            all.push(child);
        }
    }
    all
}

/// The processes serving a path, each named, with its pids.
type Servers<'a> = Vec<(&'a str, Vec<u32>)>;

/// One wrk run on a path: its figures, each server's CPU per request in µs, and the machine's.
type Turn = (Figures, Vec<(String, f64)>, Machine);

/// What the whole machine spent during one wrk run: every process, wrk's and the kernel's
/// included.
#[derive(Clone, Copy)]
struct Machine {
    /// Busy CPU time per request, summed over the cores, in µs.
    busy_us: f64,
    /// The share of the cores' time that was busy.
    busy_share: f64,
}

/// Runs wrk against `url` and also reads the CPU time each of `servers` spent per request.
fn wrk_with_cpu(url: &str, servers: &Servers) -> Turn {
    let spent = |pids: &[u32]| pids.iter().map(|p| cpu_time(*p)).sum::<Duration>();
    let before: Vec<Duration> = servers.iter().map(|(_, pids)| spent(pids)).collect();
    let (busy_before, all_before) = machine_time();
    let figures = wrk(url);
    let (busy, all) = machine_time();
    let busy = (busy - busy_before).as_secs_f64();
    let machine = Machine {
        busy_us: busy * 1e6 / figures.requests,
        busy_share: busy / (all - all_before).as_secs_f64().max(f64::MIN_POSITIVE),
    };
    let per_request = servers
        .iter()
        .zip(before)
        .map(|((name, pids), before)| {
            let micros = (spent(pids) - before).as_secs_f64() * 1e6 / figures.requests;
            (name.to_string(), micros)
        })
        .collect();
    (figures, per_request, machine)
}

fn wait_listening(addr: SocketAddr) {
    for _ in 0..500 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing listens on {addr}");
}

fn bare(bins: &Path) -> (Killed, SocketAddr, u32) {
    serve(bins, "bare", &[])
}

/// The bench's own server `name` (`src/bin/`) on a free port, with `env` beside `PORT`.
fn serve(bins: &Path, name: &str, env: &[(&str, String)]) -> (Killed, SocketAddr, u32) {
    let port = portpicker::pick_unused_port().expect("a free port");
    let child = Command::new(bins.join(name))
        .env("PORT", port.to_string())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr);
    let pid = child.id();
    (Killed(child), addr, pid)
}

/// The bare proxy (`src/bin/bare_proxy.rs`) in front of `upstream`: the limit for a proxy on
/// hyper and tokio, with none of the gateway's own work.
fn bare_proxy(bins: &Path, upstream: SocketAddr) -> (Killed, SocketAddr, u32) {
    serve(bins, "bare_proxy", &[("UPSTREAM", upstream.to_string())])
}

/// nginx as a keep-alive reverse proxy to `upstream`, with its own files in `dir`; with its
/// access log (the default format, a line a request, to a file in `dir`) when `logged`.
fn nginx(dir: &Path, upstream: SocketAddr, logged: bool) -> (Killed, SocketAddr, u32) {
    let port = portpicker::pick_unused_port().expect("a free port");
    let access_log = if logged {
        format!("{}/access.log", dir.display())
    } else {
        "off".to_string()
    };
    let conf = format!(
        "worker_processes auto;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log {access_log};\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n  fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n  upstream users {{ server {upstream}; keepalive 32; }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://users;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        dir = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf written");
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr);
    let pid = child.id();
    // The master listens before it has forked its workers, whose CPU is counted.
    for _ in 0..200 {
        if with_children(pid).len() > 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (Killed(child), addr, pid)
}

pub fn run(_runs: usize) {
    ensure("wrk", "wrk");
    ensure("nginx", "nginx");
    let bins = release_bins();
    let system = Running::up(&bins, &sample_manifest(&bins));
    let registry = system.registry();
    let address = |service: &str| -> SocketAddr {
        registry["services"][service]["instances"][0]["address"]
            .as_str()
            .expect("address")
            .parse()
            .expect("socket address")
    };
    let pid = |service: &str| -> u32 {
        registry["services"][service]["instances"][0]["pid"]
            .as_u64()
            .expect("pid") as u32
    };
    let (users, gateway) = (address("users"), address("gateway"));
    let (users_pid, gateway_pid, posts_pid) = (pid("users"), pid("gateway"), pid("posts"));
    let (supervisor, _) = system.pids();
    let (_bare, bare_addr, bare_pid) = bare(&bins);
    let nginx_dir = tempfile::tempdir().expect("temp dir");
    let (_nginx, nginx_addr, nginx_pid) = nginx(nginx_dir.path(), users, false);
    let nginx_pids = with_children(nginx_pid);
    let logged_dir = tempfile::tempdir().expect("temp dir");
    let (_logged, logged_addr, logged_pid) = nginx(logged_dir.path(), users, true);
    let logged_pids = with_children(logged_pid);
    let (_bare_proxy, bare_proxy_addr, bare_proxy_pid) = bare_proxy(&bins, users);

    println!(
        "the data path: wrk -t{THREADS} -c{CONNECTIONS} -d{SECONDS}s --latency on each path in turn, {ROUNDS} rounds (order reversed every other round), medians shown; release builds, one instance each, tracing and access logs on as shipped\n"
    );
    let mut paths: [(&str, String, Servers); 7] = [
        (
            "bare axum server, GET /users/1",
            format!("http://{bare_addr}/users/1"),
            vec![("bare", vec![bare_pid])],
        ),
        (
            "users direct, GET /users/1",
            format!("http://{users}/users/1"),
            vec![("users", vec![users_pid])],
        ),
        (
            "nginx → users, GET /users/1",
            format!("http://{nginx_addr}/users/1"),
            vec![("nginx", nginx_pids), ("users", vec![users_pid])],
        ),
        (
            "bare proxy → users, GET /users/1",
            format!("http://{bare_proxy_addr}/users/1"),
            vec![("proxy", vec![bare_proxy_pid]), ("users", vec![users_pid])],
        ),
        (
            "gateway → users, GET /users/1",
            format!("http://{gateway}/users/1"),
            vec![("gateway", vec![gateway_pid]), ("users", vec![users_pid])],
        ),
        (
            "gateway, GET /users/1/posts",
            format!("http://{gateway}/users/1/posts"),
            vec![
                ("gateway", vec![gateway_pid]),
                ("users", vec![users_pid]),
                ("posts", vec![posts_pid]),
            ],
        ),
        (
            "nginx, access log on → users",
            format!("http://{logged_addr}/users/1"),
            vec![("nginx", logged_pids), ("users", vec![users_pid])],
        ),
    ];
    // msctl's supervisor takes the log lines and spans of every service on a path but the bare
    // server, which it does not run.
    for (_, _, servers) in paths.iter_mut().skip(1) {
        servers.push(("msctl", vec![supervisor]));
    }
    let mut turns: Vec<Vec<Turn>> = paths.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        let mut order: Vec<usize> = (0..paths.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (_, url, servers) = &paths[i];
            turns[i].push(wrk_with_cpu(url, servers));
        }
    }
    let mid = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    print_table(
        &[
            "path",
            "requests/s",
            "p50",
            "p99",
            "machine CPU",
            "server CPU per request",
        ],
        &paths
            .iter()
            .zip(&turns)
            .map(|((name, _, servers), turns)| {
                let of =
                    |f: fn(&Figures) -> f64| mid(turns.iter().map(|(fig, ..)| f(fig)).collect());
                let cpu: Vec<(&str, f64)> = servers
                    .iter()
                    .enumerate()
                    .map(|(i, (who, _))| {
                        (*who, mid(turns.iter().map(|(_, c, _)| c[i].1).collect()))
                    })
                    .collect();
                let each: Vec<String> = cpu
                    .iter()
                    .map(|(who, us)| format!("{who} {us:.0}"))
                    .collect();
                let total: f64 = cpu.iter().map(|(_, us)| us).sum();
                let split = if each.len() > 1 {
                    format!(" ({})", each.join(" + "))
                } else {
                    String::new()
                };
                vec![
                    name.to_string(),
                    format!("{:.0}", of(|f| f.rps)),
                    format!("{:.2} ms", of(|f| f.p50_ms)),
                    format!("{:.2} ms", of(|f| f.p99_ms)),
                    format!(
                        "{:.0} µs",
                        mid(turns.iter().map(|(.., m)| m.busy_us).collect())
                    ),
                    format!("{total:.0} µs{split}"),
                ]
            })
            .collect::<Vec<_>>(),
    );
    println!(
        "(server CPU: user and system time of the processes serving the path, per request; machine CPU: all the cores' busy time per request, wrk's and the kernel's included; all share the machine's cores)"
    );
    println!();
    // Each ratio is taken within a round, between turns seconds apart; the median is the figure.
    let ratio = |over: usize, under: usize, f: fn(&Figures) -> f64| {
        let xs: Vec<f64> = turns[over]
            .iter()
            .zip(&turns[under])
            .map(|((a, ..), (b, ..))| f(a) / f(b))
            .collect();
        let mut each = xs.clone();
        each.sort_by(f64::total_cmp);
        let each: Vec<String> = each.iter().map(|x| format!("{x:.2}")).collect();
        (mid(xs), each.join(" "))
    };
    let (gateway_nginx, each) = ratio(4, 2, |f| f.rps);
    let (p50, _) = ratio(4, 2, |f| f.p50_ms);
    let (p99, _) = ratio(4, 2, |f| f.p99_ms);
    println!(
        "gateway / nginx throughput: {gateway_nginx:.2}   (target >= 1.0; rounds: {each}; latency gateway / nginx: p50 {p50:.2}, p99 {p99:.2}, target <= 1.0)"
    );
    let (users_bare, each) = ratio(1, 0, |f| f.rps);
    println!("users direct / bare:        {users_bare:.2}   (target >= 0.6; rounds: {each})");
    let (posts_users, each) = ratio(5, 1, |f| f.rps);
    println!("/users/1/posts / users:     {posts_users:.2}   (target >= 0.5; rounds: {each})");
    // What the target would be with a gateway that cost nothing, on this machine: with its
    // cores saturated, throughput is the cores over all that is spent per request, wrk's own
    // and the kernel's included, and the gateway's part is taken away from the posts path's.
    let ceilings: Vec<f64> = turns[5]
        .iter()
        .zip(&turns[1])
        .map(|((_, servers, posts), (_, _, direct))| {
            direct.busy_us / (posts.busy_us - servers[0].1).max(f64::MIN_POSITIVE)
        })
        .collect();
    let least_busy = turns[1]
        .iter()
        .chain(&turns[5])
        .map(|(.., m)| m.busy_share)
        .fold(1.0, f64::min);
    println!(
        "  ... with a gateway that cost nothing: {:.2}   (machine CPU per request, wrk's included: users direct {:.0} µs, /users/1/posts {:.0} µs less the gateway's {:.0}; cores at least {:.0} % busy in those runs, so this holds only near 100 %)",
        mid(ceilings),
        mid(turns[1].iter().map(|(.., m)| m.busy_us).collect()),
        mid(turns[5].iter().map(|(.., m)| m.busy_us).collect()),
        mid(turns[5].iter().map(|(_, s, _)| s[0].1).collect()),
        least_busy * 100.0,
    );
    // Not targets: where a proxy on this stack stands, and how much of the gap is the gateway's.
    let (proxy_nginx, each) = ratio(3, 2, |f| f.rps);
    println!("bare proxy / nginx:         {proxy_nginx:.2}   (the stack's limit; rounds: {each})");
    let (gateway_proxy, each) = ratio(4, 3, |f| f.rps);
    println!(
        "gateway / bare proxy:       {gateway_proxy:.2}   (the gateway's own work; rounds: {each})"
    );
    // nginx as the target compares it writes no access log; the gateway writes one as shipped.
    let (gateway_logged, each) = ratio(4, 6, |f| f.rps);
    let (p50, _) = ratio(4, 6, |f| f.p50_ms);
    println!(
        "gateway / nginx logging:    {gateway_logged:.2}   (both write an access line a request; rounds: {each}; p50 {p50:.2})"
    );
    let rss: Vec<String> = registry["services"]
        .as_object()
        .into_iter()
        .flat_map(|services| services.iter())
        .filter_map(|(name, entry)| {
            let pid = entry["instances"][0]["pid"].as_u64()? as u32;
            let kib = peak_rss_kib(pid)?;
            Some(format!("{name} {:.1} MiB", kib as f64 / 1024.0))
        })
        .collect();
    println!(
        "peak RSS under this load:   {}   (target < 20 MiB each)",
        rss.join(", ")
    );
}
