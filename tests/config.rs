//! `msctl config`: the check for CI, the resolved manifest it prints, and that what it prints
//! reads back as the same system.

mod common;

use common::{TestProject, stdout_json};

/// A manifest that uses most settings, defaults among them.
const MANIFEST: &str = r#"
[defaults]
build = ["true"]
stop_timeout = "1500ms"
env = { SHARED = "yes" }

[services.gateway]
command = ["${MSCTL_CONFIG_TEST_BIN:-{bin}}/msctl-fixture", "--port", "{port}"]
depends_on = ["users", "queue"]
health = "/ready"
replicas = 2

[services.users]
command = ["{bin}/msctl-fixture"]
port = 18087
env = { OWN = "1" }
restart = "always"
kubernetes = { volume = "1Gi", memory = "64Mi" }

[services.queue]
command = ["nats-server", "-p", "{port}"]
build = []
health = "tcp"
optional = true
install = "apt-get install nats-server"
image = "nats:2.10"

[services.migrate]
command = ["{bin}/msctl-fixture"]
job = true
profiles = ["setup"]
env_file = ["migrate.env"]
"#;

fn printed(p: &TestProject, args: &[&str]) -> String {
    let out = p.msctl().arg("config").args(args).output().unwrap();
    assert!(out.status.success(), "msctl config {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn config_prints_every_service_resolved_in_start_order_and_reads_back_the_same() {
    let p = TestProject::new(MANIFEST);
    assert_eq!(
        printed(&p, &["--services"]),
        "users\nqueue\ngateway\nmigrate\n"
    );

    let services = stdout_json(&p.msctl().args(["config", "--json"]).output().unwrap());
    let names: Vec<&str> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["users", "queue", "gateway", "migrate"]);
    let gateway = &services[2];
    // The defaults are filled in, the variable's default taken, placeholders left for each
    // instance.
    assert_eq!(gateway["build"], serde_json::json!(["true"]));
    assert_eq!(gateway["stop_timeout"], "1s 500ms");
    assert_eq!(gateway["env"], serde_json::json!({"SHARED": "yes"}));
    assert_eq!(gateway["port"], "auto");
    assert_eq!(gateway["replicas"], 2);
    assert_eq!(gateway["health"], "/ready");
    let command = gateway["command"][0].as_str().unwrap();
    assert!(
        command.ends_with("/msctl-fixture") && !command.contains("${"),
        "{command}"
    );
    assert_eq!(gateway["command"][2], "{port}");
    let users = &services[0];
    assert_eq!(users["port"], 18087);
    assert_eq!(
        users["env"],
        serde_json::json!({"SHARED": "yes", "OWN": "1"})
    );
    assert_eq!(users["restart"], "always");
    assert_eq!(users["kubernetes"]["memory"], "64Mi");
    let queue = &services[1];
    assert_eq!(queue["build"], serde_json::json!([]));
    assert_eq!(queue["health"], "tcp");
    assert_eq!(queue["optional"], true);
    assert_eq!(queue["image"], "nats:2.10");
    let migrate = &services[3];
    assert_eq!(migrate["job"], true);
    assert_eq!(migrate["profiles"], serde_json::json!(["setup"]));
    assert_eq!(migrate["env_file"], serde_json::json!(["migrate.env"]));

    // The TOML is a manifest in its own right: read back, it is the same system.
    let toml = printed(&p, &[]);
    assert!(toml.starts_with("# "), "{toml}");
    let again = TestProject::new(&toml);
    let reread = stdout_json(&again.msctl().args(["config", "--json"]).output().unwrap());
    assert_eq!(reread, services, "{toml}");
}

#[test]
fn config_quiet_is_a_check_that_prints_nothing() {
    let p = TestProject::new(MANIFEST);
    let out = p.msctl().args(["config", "-q"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");

    let broken = TestProject::new("[services.users]\ncommand = [\"users\"]\nreplicas = \"two\"\n");
    let out = broken.msctl().args(["config", "-q"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "a broken msctl.toml exits 3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("msctl.toml:3") && stderr.contains("replicas"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let cycle = TestProject::new(
        "[services.a]\ncommand = [\"a\"]\ndepends_on = [\"b\"]\n[services.b]\ncommand = [\"b\"]\ndepends_on = [\"a\"]\n",
    );
    let out = cycle.msctl().args(["config", "-q"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dependency cycle: a -> b -> a"), "{stderr}");

    for args in [
        &["-q", "--json"][..],
        &["--services", "--json"],
        &["--yaml"],
    ] {
        let out = p.msctl().arg("config").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "msctl config {args:?}");
    }
}

#[test]
fn a_variable_with_no_value_is_warned_about_and_left_as_written() {
    let p =
        TestProject::new("[services.users]\ncommand = [\"${MSCTL_CONFIG_TEST_UNSET}/users\"]\n");
    let out = p
        .msctl()
        .env_remove("MSCTL_CONFIG_TEST_UNSET")
        .args(["config", "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "the file itself is valid");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: service `users`")
            && stderr.contains("MSCTL_CONFIG_TEST_UNSET")
            && stderr.contains("${NAME:-default}"),
        "{stderr}"
    );
    let toml = String::from_utf8(
        p.msctl()
            .env_remove("MSCTL_CONFIG_TEST_UNSET")
            .arg("config")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        toml.contains(r#"command = ["${MSCTL_CONFIG_TEST_UNSET}/users"]"#),
        "{toml}"
    );
}

#[test]
fn env_values_are_expanded_and_filled_in_as_commands_are() {
    let p = TestProject::new(
        r#"
[services.a]
command = ["sh", "-c", "echo \"GREETING=$GREETING DB=$DB FALLBACK=$FALLBACK\"; exec {bin}/msctl-fixture"]
env = { GREETING = "${MSCTL_ENV_TEST_WORD}!", DB = "sqlite://{data_dir}/app.db", FALLBACK = "${MSCTL_ENV_TEST_UNSET:-plain}" }
"#,
    );
    let up = p
        .msctl()
        .env("MSCTL_ENV_TEST_WORD", "hello")
        .env_remove("MSCTL_ENV_TEST_UNSET")
        .args(["up", "-d"])
        .output()
        .unwrap();
    assert!(up.status.success(), "{up:?}");
    let data_dir = std::fs::canonicalize(p.path().join(".msctl/data/a")).unwrap();
    let log = p.log_text("a-1");
    assert!(
        log.starts_with(&format!(
            "GREETING=hello! DB=sqlite://{}/app.db FALLBACK=plain\n",
            data_dir.display()
        )),
        "{log}"
    );
    // `msctl config` shows them as the service gets them.
    let json = stdout_json(
        &p.msctl()
            .env("MSCTL_ENV_TEST_WORD", "hello")
            .args(["config", "--json"])
            .output()
            .unwrap(),
    );
    let env = &json[0]["env"];
    assert_eq!(env["GREETING"], "hello!", "{json}");
    assert_eq!(env["FALLBACK"], "plain", "{json}");
    p.msctl().arg("down").assert().success();

    // With no value and no default the start fails, naming the variable.
    let out = p
        .msctl()
        .env_remove("MSCTL_ENV_TEST_WORD")
        .args(["up", "-d"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains(
            "env GREETING: `${MSCTL_ENV_TEST_WORD}!` uses ${MSCTL_ENV_TEST_WORD}, which is not set"
        ),
        "{stderr}"
    );
}

#[test]
fn the_projects_dotenv_fills_variables_and_reaches_the_services() {
    // As overmind and honcho load `.env` into every process, and compose fills `${VAR}` from
    // it; the shell wins over the file.
    let p = TestProject::new(
        r#"
[services.a]
command = ["sh", "-c", "echo \"inherited=$DOTENV_WORD expanded=$1\"; exec {bin}/msctl-fixture", "sh", "${DOTENV_WORD}-x"]
"#,
    );
    p.write(".env", "# for msctl\nDOTENV_WORD=\"from dotenv\"\n");
    p.up();
    let said = |p: &TestProject| {
        p.log_text("a-1")
            .lines()
            .find(|l| l.starts_with("inherited="))
            .map(str::to_string)
    };
    assert_eq!(
        said(&p).as_deref(),
        Some("inherited=from dotenv expanded=from dotenv-x")
    );
    p.msctl().arg("down").assert().success();
    std::fs::remove_file(p.path().join(".msctl/logs/a-1.log")).unwrap();
    let up = p
        .msctl()
        .env("DOTENV_WORD", "shell")
        .args(["up", "-d"])
        .output()
        .unwrap();
    assert!(up.status.success(), "{up:?}");
    assert_eq!(
        said(&p).as_deref(),
        Some("inherited=shell expanded=shell-x")
    );
    p.msctl().arg("down").assert().success();

    // A line that is not NAME=value is named; the rest of the command goes on.
    p.write(".env", "DOTENV_WORD=fine\nnot a variable\n");
    let out = p.msctl().arg("ps").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(".env:2: cannot read `not a variable`: write NAME=value"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing is running"), "{stderr}");
}

#[test]
fn env_files_are_read_at_each_start_with_the_env_table_and_msctls_own_winning() {
    let p = TestProject::new(
        r#"
[services.a]
command = ["sh", "-c", "echo \"g=$GREETING s=$SHARED o=$OVERRIDE p=$PORT\"; exec {bin}/msctl-fixture"]
env_file = [".env.a", "config/.env.b"]
env = { OVERRIDE = "table" }
"#,
    );
    p.write(
        ".env.a",
        "GREETING=a\nSHARED=from-a\nOVERRIDE=file\nPORT=1\n",
    );
    p.write("config/.env.b", "SHARED='from-b'\n");
    p.up();
    let port = p.url_of("a-1").rsplit(':').next().unwrap().to_string();
    let log = p.log_text("a-1");
    assert!(
        log.contains(&format!("g=a s=from-b o=table p={port}\n")),
        "{log}"
    );
    assert!(
        log.contains("[msctl] .env.a sets PORT, which msctl sets itself; msctl's value is used"),
        "{log}"
    );
    let json = stdout_json(&p.msctl().args(["config", "--json"]).output().unwrap());
    assert_eq!(
        json[0]["env_file"],
        serde_json::json!([".env.a", "config/.env.b"])
    );
    p.msctl().arg("down").assert().success();

    // A file that is not there fails the start, naming it.
    std::fs::remove_file(p.path().join("config/.env.b")).unwrap();
    let out = p.msctl().args(["up", "-d"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("env_file: cannot read") && stderr.contains("config/.env.b"),
        "{stderr}"
    );
}
