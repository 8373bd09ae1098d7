//! `msctl scaffold`: generated files (snapshots), every rejection (snapshots, and nothing
//! written), edits that keep comments, and a scaffolded service that builds, starts, answers
//! through the gateway and shows up in traces with no other edit.

mod common;

use common::{TestProject, copy_of_repository, stdout_json};
use std::path::Path;
use std::process::Command;

/// A small workspace: a Cargo.toml with members, and msctl.toml with two services, both
/// carrying comments that the edits must keep.
fn workspace() -> TestProject {
    let p = TestProject::new(
        r#"# The test system.

[services.users]   # people
command = ["users"]

# posts come after users
[services.posts]
command = ["posts"]
port = 4010
"#,
    );
    p.write(
        "Cargo.toml",
        "# A workspace for scaffold tests.\n[workspace]\nmembers = [\"services/users\"] # keep me\nresolver = \"3\"\n",
    );
    p
}

/// Every file below `dir` (except .msctl), with its contents: a picture of what is on disk.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if path.ends_with(".msctl") {
                continue;
            }
            let kind = e.file_type().unwrap();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.push((name, target.display().to_string().into_bytes()));
            } else if kind.is_dir() {
                stack.push(path);
            } else {
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn scaffold(p: &TestProject, args: &[&str]) -> std::process::Output {
    p.msctl().arg("scaffold").args(args).output().unwrap()
}

/// What `msctl scaffold ARGS --dry-run` prints: the files it would write.
fn dry_run(p: &TestProject, args: &[&str]) -> String {
    let out = p
        .msctl()
        .arg("scaffold")
        .args(args)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn generated_files_without_dependencies() {
    insta::assert_snapshot!(dry_run(&workspace(), &["billing"]));
}

#[test]
fn generated_files_with_a_dependency_and_a_port() {
    insta::assert_snapshot!(dry_run(
        &workspace(),
        &["billing", "--dep", "users", "--port", "4020"]
    ));
}

#[test]
fn edits_keep_comments_and_layout() {
    let p = workspace();
    let out = scaffold(&p, &["billing", "--dep", "users"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    insta::assert_snapshot!(
        "msctl_toml_after",
        std::fs::read_to_string(p.path().join("msctl.toml")).unwrap()
    );
    insta::assert_snapshot!(
        "cargo_toml_after",
        std::fs::read_to_string(p.path().join("Cargo.toml")).unwrap()
    );
    for file in ["Cargo.toml", "src/lib.rs", "src/main.rs", "tests/hello.rs"] {
        assert!(
            p.path().join("services/billing").join(file).is_file(),
            "{file}"
        );
    }
    // The result is a valid manifest that msctl reads.
    p.msctl()
        .args(["up", "--no-build", "nonexistent"])
        .assert()
        .code(2);
    // And the same name again is refused.
    let out = scaffold(&p, &["billing"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_rejection_is_clear_and_writes_nothing() {
    let p = workspace();
    // A project template that does not render.
    std::fs::create_dir_all(p.path().join("templates/broken")).unwrap();
    p.write(
        "templates/broken/service.toml.j2",
        "command = [\"{{ name }}\"]\n",
    );
    p.write(
        "templates/broken/src/lib.rs.j2",
        "//! ok\n{% if name %}\nfn main() {}\n",
    );
    std::fs::create_dir_all(p.path().join("templates/typo")).unwrap();
    p.write(
        "templates/typo/service.toml.j2",
        "command = [\"{{ nme }}\"]\n",
    );
    std::fs::create_dir_all(p.path().join("templates/bad-table")).unwrap();
    p.write(
        "templates/bad-table/service.toml.j2",
        "command = \"{{ name }}\"\n",
    );
    // A link back to the templates folder: not followed, and named.
    std::fs::create_dir_all(p.path().join("templates/looped")).unwrap();
    p.write(
        "templates/looped/service.toml.j2",
        "command = [\"{{ name }}\"]\n",
    );
    std::os::unix::fs::symlink("..", p.path().join("templates/looped/up")).unwrap();
    let before = tree(p.path());
    let cases: Vec<(&str, Vec<&str>, i32)> = vec![
        ("path_parent", vec!["../x"], 2),
        ("path_absolute", vec!["/abs"], 2),
        ("space", vec!["bill ing"], 2),
        ("lookalike", vec!["bіlling"], 2),
        ("uppercase", vec!["Billing"], 2),
        ("digit_first", vec!["2fa"], 2),
        ("underscore", vec!["bill_ing"], 2),
        ("too_long", vec!["a-very-long-service-name-indeed-x"], 2),
        ("reserved_gateway", vec!["gateway"], 2),
        ("reserved_msctl", vec!["msctl"], 2),
        ("exists", vec!["users"], 2),
        ("instance_id", vec!["users-2"], 2),
        ("unknown_dep", vec!["billing", "--dep", "user"], 2),
        ("port_taken", vec!["billing", "--port", "4010"], 2),
        ("port_zero", vec!["billing", "--port", "0"], 2),
        (
            "dep_twice",
            vec!["billing", "--dep", "users", "--dep", "users"],
            2,
        ),
        ("rust_keyword", vec!["match"], 2),
        ("windows_name", vec!["aux"], 2),
        ("unknown_template", vec!["billing", "--template", "nope"], 2),
        (
            "broken_template",
            vec!["billing", "--template", "broken"],
            3,
        ),
        ("template_typo", vec!["billing", "--template", "typo"], 3),
        (
            "template_link_loop",
            vec!["billing", "--template", "looped"],
            3,
        ),
        (
            "template_bad_table",
            vec!["billing", "--template", "bad-table"],
            3,
        ),
    ];
    let dir = p.path().display().to_string();
    for (name, args, code) in cases {
        let out = scaffold(&p, &args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr).replace(&dir, "[DIR]");
        insta::assert_snapshot!(format!("reject_{name}"), stderr);
        assert!(tree(p.path()) == before, "{name} wrote something");
    }
}

#[test]
fn templates_are_listed() {
    let p = workspace();
    std::fs::create_dir_all(p.path().join("templates/worker")).unwrap();
    p.write(
        "templates/worker/template.toml",
        "description = \"a queue worker\"\n",
    );
    p.write(
        "templates/worker/service.toml.j2",
        "command = [\"{{ name }}\"]\n",
    );
    // A file manager's litter is no part of a template; a template that cannot be read is
    // listed as broken, and stands in the way of no other.
    std::fs::write(
        p.path().join("templates/worker/.DS_Store"),
        [0u8, 0xff, 0xfe],
    )
    .unwrap();
    std::fs::create_dir_all(p.path().join("templates/unreadable")).unwrap();
    std::fs::write(
        p.path().join("templates/unreadable/logo.png"),
        [0x89, b'P', 0xff],
    )
    .unwrap();
    let out = p
        .msctl()
        .args(["scaffold", "--list-templates"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("service") && l.contains("built in")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("worker") && l.contains("a queue worker")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("unreadable")
            && l.contains("broken: ")
            && l.contains("logo.png: cannot read it as text")),
        "{text}"
    );
    // A project template is used by name.
    let out = scaffold(&p, &["jobs", "--template", "worker"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_to_string(p.path().join("msctl.toml"))
            .unwrap()
            .contains("[services.jobs]\ncommand = [\"jobs\"]")
    );
}

/// A target folder for the copy that starts from this build's compiled dependencies, hard-linked
/// (cargo replaces files, never writes into them), so that only the workspace's own crates build.
fn seeded_target(to: &Path) -> std::path::PathBuf {
    let shared = Path::new(env!("CARGO_BIN_EXE_msctl")).parent().unwrap();
    let target = to.join("debug");
    std::fs::create_dir_all(to).unwrap();
    let status = Command::new("cp")
        .arg("-al")
        .arg(shared)
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success());
    // Incremental caches are written in place; the copy starts without them.
    let _ = std::fs::remove_dir_all(target.join("incremental"));
    to.to_path_buf()
}

#[test]
fn a_scaffolded_service_works_on_the_first_up() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    copy_of_repository(&repo);
    let target = seeded_target(&work.path().join("target"));
    let p = TestProject::at(&repo);
    let msctl = |args: &[&str]| {
        let mut cmd = p.msctl();
        cmd.args(args)
            .env("CARGO_TARGET_DIR", &target)
            .timeout(std::time::Duration::from_secs(600));
        cmd.output().unwrap()
    };
    let out = msctl(&["scaffold", "billing", "--dep", "users"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Its own test passes, and it is formatted as the workspace wants.
    let cargo = |args: &[&str]| {
        Command::new(env!("CARGO"))
            .args(args)
            .current_dir(&repo)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap()
    };
    let out = cargo(&["test", "-q", "-p", "billing"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cargo(&["fmt", "-p", "billing", "--", "--check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // up builds and starts it, healthy, in ps and the registry.
    let out = msctl(&["up", "-d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(p.instance("billing-1").unwrap()["state"], "healthy");
    let ps = stdout_json(&msctl(&["ps", "--json"]));
    assert!(
        ps.as_array()
            .unwrap()
            .iter()
            .any(|r| r["instance"] == "billing-1" && r["state"] == "healthy")
    );

    // Through the gateway, with its traced call to users.
    let out = msctl(&["call", "billing/hello", "--json"]);
    let answer = stdout_json(&out);
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"]["message"], "hello from billing");
    assert_eq!(answer["body"]["deps"]["users"]["status"], 200);
    let id = answer["trace_id"].as_str().unwrap().to_string();
    let spans = p.wait_until("billing's spans", |_| {
        let spans = stdout_json(&msctl(&["trace", &id, "--json"]));
        let spans = spans.as_array()?.clone();
        (spans.len() >= 6).then_some(spans)
    });
    let services: std::collections::HashSet<&str> = spans
        .iter()
        .map(|s| s["resource"]["service.name"].as_str().unwrap())
        .collect();
    assert!(
        ["msctl", "gateway", "billing", "users"]
            .iter()
            .all(|s| services.contains(s)),
        "{services:?}"
    );
    let listed = stdout_json(&msctl(&["traces", "--service", "billing", "--json"]));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["trace_id"] == id.as_str())
    );
    let out = msctl(&["down"]);
    assert!(out.status.success());
}

#[test]
fn what_an_interrupted_scaffold_left_is_taken_back_by_the_next() {
    let p = workspace();
    // What a scaffold killed between its steps leaves: a staging folder of a process that is
    // gone, and a service folder still marked unfinished, already in the workspace members and
    // msctl.toml.
    let dead_pid = 999_999_999u32;
    p.write(
        &format!("services/.billing.scaffolding-{dead_pid}/src/lib.rs"),
        "//! half\n",
    );
    p.write("services/half/.msctl-scaffold-unfinished", "");
    p.write("services/half/src/lib.rs", "//! half\n");
    let cargo = std::fs::read_to_string(p.path().join("Cargo.toml")).unwrap();
    p.write(
        "Cargo.toml",
        &cargo.replace(
            "[\"services/users\"]",
            "[\"services/users\", \"services/half\"]",
        ),
    );
    let manifest = std::fs::read_to_string(p.path().join("msctl.toml")).unwrap();
    p.write(
        "msctl.toml",
        &format!("{manifest}\n[services.half]\ncommand = [\"half\"]\n"),
    );
    // A dry run says so and writes nothing.
    let out = scaffold(&p, &["other", "--dry-run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("half added; a real run takes it back"),
        "{stderr}"
    );
    assert!(
        p.path()
            .join("services/half/.msctl-scaffold-unfinished")
            .exists()
    );
    // Another service is created cleanly, and the leftovers are gone with their manifest
    // entries: the manifests are as they were, comments and all.
    let out = scaffold(&p, &["other"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!p.path().join("services/half").exists());
    let manifest = std::fs::read_to_string(p.path().join("msctl.toml")).unwrap();
    assert!(!manifest.contains("[services.half]"), "{manifest}");
    assert!(manifest.contains("# posts come after users"), "{manifest}");
    let cargo = std::fs::read_to_string(p.path().join("Cargo.toml")).unwrap();
    assert!(!cargo.contains("services/half"), "{cargo}");
    assert!(cargo.contains("# keep me"), "{cargo}");
    assert!(
        !p.path()
            .join(format!("services/.billing.scaffolding-{dead_pid}"))
            .exists()
    );
    // The new service is finished: no marker is left in it.
    assert!(
        !p.path()
            .join("services/other/.msctl-scaffold-unfinished")
            .exists()
    );
}

#[test]
fn ctrl_c_in_the_middle_of_a_scaffold_waits_until_the_service_is_whole() {
    let p = workspace();
    let mut child = p
        .msctl_process()
        .args(["scaffold", "billing"])
        .env("MSCTL_FAULT", "slow-scaffold")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The folder is there, the manifests are not yet: the worst moment for a Ctrl-C.
    common::wait_until(std::time::Duration::from_secs(20), "the folder", || {
        p.path().join("services/billing").exists().then_some(())
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let manifest = std::fs::read_to_string(p.path().join("msctl.toml")).unwrap();
    assert!(manifest.contains("[services.billing]"), "{manifest}");
    let cargo = std::fs::read_to_string(p.path().join("Cargo.toml")).unwrap();
    assert!(cargo.contains("services/billing"), "{cargo}");
    assert!(
        !p.path()
            .join("services/billing/.msctl-scaffold-unfinished")
            .exists()
    );
}
