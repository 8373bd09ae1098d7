//! ps, health, logs, restart, stop, start and completions: their text and JSON output and exit
//! codes, against a running system.

mod common;

use common::{TestProject, alive, stdout_json, wait_until};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

fn two_services() -> TestProject {
    TestProject::new(
        r#"
[services.alpha]
command = ["{bin}/msctl-fixture"]
replicas = 2
[services.beta]
command = ["{bin}/msctl-fixture"]
depends_on = ["alpha"]
"#,
    )
}

#[test]
fn ps_in_text_and_json() {
    let p = two_services();
    p.up();
    let out = p.msctl().arg("ps").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "SERVICE", "INSTANCE", "PID", "ADDRESS", "STATE", "UPTIME", "CPU", "MEM", "RESTARTS",
            "HEALTH"
        ]
    );
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[1].starts_with("alpha    alpha-1"), "{text}");
    assert!(lines[2].starts_with("alpha    alpha-2"), "{text}");
    assert!(lines[3].starts_with("beta     beta-1"), "{text}");
    assert!(lines[1..].iter().all(|l| l.contains(" healthy ")), "{text}");

    let rows = stdout_json(&p.msctl().args(["ps", "--json"]).output().unwrap());
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        for key in [
            "service",
            "instance",
            "pid",
            "address",
            "state",
            "uptime_ms",
            "cpu_ms",
            "rss_bytes",
            "restarts",
            "last_health",
            "reason",
            "stale",
        ] {
            assert!(row.get(key).is_some(), "{key} missing in {row}");
        }
        assert_eq!(row["state"], "healthy");
        assert!(alive(row["pid"].as_u64().unwrap() as u32));
        // The fixture is a real process: it holds some memory and has used some CPU.
        assert!(row["rss_bytes"].as_u64().unwrap() > 512 * 1024, "{row}");
        assert!(row["cpu_ms"].as_u64().is_some(), "{row}");
        assert!(row["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    // Replicas are on ports of their own.
    assert_ne!(rows[0]["address"], rows[1]["address"]);
}

#[test]
fn nothing_running_is_stated_plainly() {
    let p = two_services();
    let out = p.msctl().args(["ps", "--json"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(stdout_json(&out), serde_json::json!([]));
    let out = p.msctl().arg("health").output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: nothing is running in")
            && stderr.contains("hint: start it with `msctl up -d`"),
        "{stderr}"
    );
    let out = p.msctl().args(["restart", "alpha"]).output().unwrap();
    assert_eq!(out.status.code(), Some(6));
}

#[test]
fn health_reports_each_instance_and_fails_when_one_is_down() {
    let p = two_services();
    p.up();
    let out = p.msctl().args(["health", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let checks = stdout_json(&out);
    assert_eq!(checks.as_array().unwrap().len(), 3);
    assert!(
        checks
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["healthy"] == true && c["result"].as_str().unwrap().starts_with("200 in"))
    );

    p.msctl().args(["stop", "beta"]).assert().success();
    let out = p.msctl().arg("health").output().unwrap();
    assert_eq!(out.status.code(), Some(8));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("beta-1") && l.contains("UNHEALTHY")),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 3 instances are not healthy"));

    p.msctl().args(["start", "beta"]).assert().success();
    assert_eq!(p.instance("beta-1").unwrap()["state"], "healthy");
    p.msctl().arg("health").assert().code(0);
}

#[test]
fn restart_replaces_every_instance_of_a_service() {
    let p = two_services();
    p.up();
    let before = p.pids_of(&["alpha-1", "alpha-2", "beta-1"]);
    p.msctl().args(["restart", "alpha"]).assert().success();
    let after = p.pids_of(&["alpha-1", "alpha-2", "beta-1"]);
    assert_ne!(before[0], after[0]);
    assert_ne!(before[1], after[1]);
    assert_eq!(before[2], after[2], "beta is left alone");
    assert!(!alive(before[0]) && !alive(before[1]));
    assert_eq!(p.instance("alpha-1").unwrap()["restarts"], 1);

    let out = p.msctl().args(["restart", "gamma"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no service `gamma`"), "{stderr}");
    assert!(stderr.contains("services: alpha, beta"), "{stderr}");
}

#[test]
fn restart_stop_and_start_take_several_services_or_every_one() {
    let p = two_services();
    p.up();
    let instances = ["alpha-1", "alpha-2", "beta-1"];
    let pids = || -> Vec<u32> { instances.iter().map(|i| p.pid_of(i).unwrap()).collect() };
    let said = |args: &[&str]| -> Vec<String> {
        let out = p.msctl().args(args).output().unwrap();
        assert!(out.status.success(), "msctl {args:?}: {out:?}");
        // What was done is said on stderr, as every status line is; stdout stays for data.
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(String::from)
            .collect()
    };

    // None named: every service, in the order `up` starts them.
    let before = pids();
    assert_eq!(said(&["restart"]), ["alpha restarted", "beta restarted"]);
    let after = pids();
    assert!(
        before.iter().zip(&after).all(|(b, a)| b != a),
        "{before:?} → {after:?}"
    );
    assert!(before.iter().all(|pid| !alive(*pid)));

    // Stopping goes the other way: beta depends on alpha.
    assert_eq!(said(&["stop"]), ["beta stopped", "alpha stopped"]);
    for instance in instances {
        assert_eq!(
            p.instance(instance).unwrap()["state"],
            "stopped",
            "{instance}"
        );
    }
    assert!(after.iter().all(|pid| !alive(*pid)));
    let rows = stdout_json(&p.msctl().args(["ps", "--json"]).output().unwrap());
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["rss_bytes"].is_null() && r["cpu_ms"].is_null()),
        "a stopped instance uses nothing: {rows}"
    );
    assert_eq!(said(&["start"]), ["alpha, beta started"]);
    for instance in instances {
        assert_eq!(
            p.instance(instance).unwrap()["state"],
            "healthy",
            "{instance}"
        );
    }

    // Named ones, in start order whatever order they are given in.
    let before = pids();
    assert_eq!(
        said(&["restart", "beta", "alpha"]),
        ["alpha restarted", "beta restarted"]
    );
    let after = pids();
    assert!(
        before.iter().zip(&after).all(|(b, a)| b != a),
        "{before:?} → {after:?}"
    );

    // One unknown name and nothing is done at all.
    let out = p.msctl().args(["stop", "alpha", "gamma"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service `gamma`"));
    assert_eq!(pids(), after, "nothing was stopped");
    for instance in instances {
        assert_eq!(
            p.instance(instance).unwrap()["state"],
            "healthy",
            "{instance}"
        );
    }
}

#[test]
fn acting_on_every_service_says_an_optional_one_not_installed_was_skipped() {
    let p = TestProject::new(
        r#"
[services.api]
command = ["{bin}/msctl-fixture"]
[services.queue]
command = ["msctl-test-no-such-broker", "{port}"]
health = "tcp"
optional = true
install = "apt-get install no-such-broker"
"#,
    );
    p.up();
    for (args, api) in [
        ("restart", "api restarted"),
        ("stop", "api stopped"),
        ("start", "api started"),
    ] {
        let out = p.msctl().arg(args).output().unwrap();
        assert!(out.status.success(), "msctl {args}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.lines().any(|l| l == api), "{stderr}");
        assert!(
            stderr.lines().any(|l| l.starts_with("queue skipped: `msctl-test-no-such-broker` is not installed (install it: apt-get install no-such-broker)")),
            "{stderr}"
        );
    }
}

#[test]
fn ps_and_logs_take_several_services_or_every_one() {
    let p = two_services();
    p.up();
    let instances = |args: &[&str]| -> Vec<String> {
        let rows = stdout_json(
            &p.msctl()
                .arg("ps")
                .args(args)
                .arg("--json")
                .output()
                .unwrap(),
        );
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["instance"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(instances(&[]), ["alpha-1", "alpha-2", "beta-1"]);
    assert_eq!(instances(&["beta"]), ["beta-1"]);
    assert_eq!(
        instances(&["beta", "alpha"]),
        ["alpha-1", "alpha-2", "beta-1"]
    );
    let out = p.msctl().args(["ps", "beta"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "a header and beta-1: {text}");

    let out = p
        .msctl()
        .args(["logs", "beta", "alpha", "-n", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // In the order the lines were written, which the instances' starts decide.
    let mut from: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(" | ").map(|(who, _)| who.trim_end()))
        .collect();
    from.sort();
    assert_eq!(from, ["alpha-1", "alpha-2", "beta-1"], "{text}");

    for args in [&["ps", "alpha", "gamma"][..], &["logs", "alpha", "gamma"]] {
        let out = p.msctl().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "msctl {args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no service `gamma`"), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "nothing printed before the error: {out:?}"
        );
    }
}

#[test]
fn logs_are_prefixed_and_tailed() {
    let p = two_services();
    p.up();
    let out = p.msctl().arg("logs").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for id in ["alpha-1", "alpha-2", "beta-1"] {
        // Prefixes are padded to the longest instance name, as in `up`.
        let prefixed = |l: &str| {
            l.split_once(" | ").is_some_and(|(who, what)| {
                who.trim_end() == id && what.starts_with(&format!("{id} listening on 127.0.0.1:"))
            })
        };
        assert!(text.lines().any(prefixed), "{text}");
    }
    let out = p
        .msctl()
        .args(["logs", "beta", "-n", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    let out = p.msctl().args(["logs", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn logs_merge_instances_in_time_order_and_select_by_time() {
    // b writes between a's two lines: each waits for a file the other makes, a tenth of a
    // second after its own line, so that msctl has read that line first.
    let p = TestProject::new(
        r#"
[services.a]
command = ["sh", "-c", "echo a1; sleep 0.1; touch go1; while [ ! -e go2 ]; do sleep 0.01; done; echo a2; exec {bin}/msctl-fixture"]
[services.b]
command = ["sh", "-c", "while [ ! -e go1 ]; do sleep 0.01; done; echo b1; sleep 0.1; touch go2; exec {bin}/msctl-fixture"]
"#,
    );
    p.up();
    let logs = |args: &[&str]| -> Vec<String> {
        let out = p.msctl().arg("logs").args(args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.contains("listening on"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(logs(&[]), ["a-1 | a1", "b-1 | b1", "a-1 | a2"]);
    // `-t`: the time msctl read each line, after the prefix, as docker compose shows it.
    let stamped = logs(&["-t"]);
    let stamp_of = |i: usize| -> String {
        let (who, rest) = stamped[i].split_once(" | ").unwrap();
        let (stamp, text) = rest.split_once(' ').unwrap();
        assert_eq!(format!("{who} | {text}"), logs(&[])[i]);
        assert!(stamp.len() == 24 && stamp.ends_with('Z'), "{stamp}");
        stamp.to_string()
    };
    let (a1, b1, a2) = (stamp_of(0), stamp_of(1), stamp_of(2));
    assert!(a1 < b1 && b1 < a2, "{stamped:?}");
    assert_eq!(logs(&["--since", &b1]), ["b-1 | b1", "a-1 | a2"]);
    assert_eq!(logs(&["--until", &b1]), ["a-1 | a1"]);
    assert_eq!(logs(&["--since", &b1, "--until", &a2]), ["b-1 | b1"]);
    assert_eq!(logs(&["--since", "1h", "b"]), ["b-1 | b1"]);
    assert!(logs(&["--until", "1h"]).is_empty());
    let stderr = p.fails_saying(&["logs", "--since", "yesterday"], 2);
    assert!(
        stderr.contains("`yesterday` is neither a time ago such as 10m or 1h30m nor a moment"),
        "{stderr}"
    );
}

#[test]
fn a_window_in_time_reaches_back_past_rotations() {
    let p = TestProject::new("[services.a]\ncommand = [\"{bin}/msctl-fixture\"]\n");
    p.write(".msctl/logs/a-1.log.2", "2026-11-28T09:00:00.000Z oldest\n");
    p.write(
        ".msctl/logs/a-1.log.1",
        "2026-11-28T09:10:00.000Z older\n2026-11-28T09:20:00.000Z old\n",
    );
    p.write(
        ".msctl/logs/a-1.log",
        "2026-11-28T09:30:00.000Z new\nplain, from before stamps\n",
    );
    let logs = |args: &[&str]| -> Vec<String> {
        let out = p.msctl().arg("logs").args(args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    // Without a window, the current file, as before.
    assert_eq!(logs(&[]), ["a-1 | new", "a-1 | plain, from before stamps"]);
    assert_eq!(
        logs(&["--since", "2026-11-28T09:15:00Z"]),
        ["a-1 | old", "a-1 | new", "a-1 | plain, from before stamps"]
    );
    assert_eq!(
        logs(&["--until", "2026-11-28T09:20:00Z", "-t"]),
        [
            "a-1 | 2026-11-28T09:00:00.000Z oldest",
            "a-1 | 2026-11-28T09:10:00.000Z older"
        ]
    );
}

#[test]
fn logs_follow_across_restarts_and_end_with_the_system() {
    let p = two_services();
    p.up();
    let mut follow = p
        .msctl_process()
        .args(["logs", "beta", "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("beta-1 | beta-1 listening"), "{first}");
    p.msctl().args(["restart", "beta"]).assert().success();
    // The restart's extra instance (beta-2) serves meanwhile; its lines may come first.
    let mut seen = Vec::new();
    for line in lines.by_ref().take(20) {
        let line = line.unwrap();
        let restarted = line.starts_with("beta-1 | beta-1 listening");
        seen.push(line);
        if restarted {
            break;
        }
    }
    assert!(
        seen.last()
            .is_some_and(|l| l.starts_with("beta-1 | beta-1 listening")),
        "the restarted instance's lines follow: {seen:#?}"
    );
    p.msctl().arg("down").assert().success();
    let status = wait_until(Duration::from_secs(10), "logs -f to end after down", || {
        follow.try_wait().unwrap()
    });
    assert!(status.success());
}

#[test]
fn completions_are_printed_for_each_shell() {
    let p = two_services();
    for shell in ["bash", "zsh", "fish"] {
        let out = p.msctl().args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("msctl"));
    }
    let out = p.msctl().args(["completions", "cmd"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_flags_are_usage_errors() {
    let p = two_services();
    let out = p.msctl().args(["up", "--detached"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument '--detached'"));
    let out = p
        .msctl()
        .args(["up", "-d", "--no-build", "zeta"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service `zeta`"));
}

#[test]
fn run_gives_a_one_off_command_the_services_environment_and_its_exit_code() {
    let p = TestProject::new(
        r#"
[services.a]
command = ["sh", "-c", "echo own command of $MSCTL_INSTANCE; exit 4"]
env = { GREETING = "hello {instance}" }
env_file = ".env.a"
"#,
    );
    p.write(".env.a", "FROM_FILE=yes\n");
    let out = p
        .msctl()
        .args(["run", "a", "--", "sh", "-c"])
        .arg("echo \"$MSCTL_SERVICE $MSCTL_INSTANCE $GREETING $FROM_FILE $PORT\"; test -d \"$MSCTL_DATA_DIR\" && exit 7")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = said.split_whitespace().collect();
    assert_eq!(
        &words[..5],
        ["a", "a-run", "hello", "a-run", "yes"],
        "{said}"
    );
    assert!(words[5].parse::<u16>().is_ok_and(|p| p > 0), "{said}");
    // With no command, the service's own, once, in the foreground.
    let out = p.msctl().args(["run", "a"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "own command of a-run\n"
    );
    // A command killed by a signal exits as a shell says: 128 and the signal.
    let out = p
        .msctl()
        .args(["run", "a", "--", "sh", "-c", "kill -TERM $$"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(128 + 15), "{out:?}");
    p.fails_saying(&["run", "nope", "--", "true"], 2);
    let stderr = p.fails_saying(&["run", "a", "--", "no-such-program-here"], 2);
    assert!(stderr.contains("no-such-program-here"), "{stderr}");

    // With the system running, the command reaches it as its services do.
    p.write(
        "msctl.toml",
        &format!(
            "[services.a]\ncommand = [\"{}\"]\n",
            common::bin("msctl-fixture").display()
        ),
    );
    p.up();
    let out = p
        .msctl()
        .args([
            "run",
            "a",
            "--",
            "sh",
            "-c",
            "echo $OTEL_EXPORTER_OTLP_ENDPOINT; grep -c a-1 \"$MSCTL_REGISTRY\"",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("http://127.0.0.1:"), "{said}");
    assert!(said.lines().nth(1).is_some_and(|n| n != "0"), "{said}");
    // A one-off command is the user's: `down` leaves it to them.
    let mut cmd = p.msctl_process();
    cmd.args([
        "run",
        "a",
        "--",
        "sh",
        "-c",
        "echo $$ > run.pid; exec sleep 30",
    ])
    .stdout(Stdio::null());
    let _run = common::Children(vec![cmd.spawn().unwrap()]);
    let pid: u32 = p.wait_until("the one-off command to start", |p| {
        std::fs::read_to_string(p.path().join("run.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    let _pid = common::KillOnDrop(pid);
    p.msctl().arg("down").assert().success();
    assert!(alive(pid), "down killed the one-off command");
}
