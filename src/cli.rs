//! The command line: every command, flag and help text msctl has.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Run, health-check and trace a system of HTTP microservices on one machine.
#[derive(Debug, Parser)]
#[command(
    name = "msctl",
    version,
    about,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// The msctl.toml to use, given before the command [default: the nearest one in this
    /// folder or a parent]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// Never colour the output (NO_COLOR in the environment does the same)
    #[arg(long, global = true)]
    pub no_color: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build and start the services, in dependency order, and supervise them
    Up(UpArgs),
    /// Run the build steps `up` would, and nothing else [default: every service]
    Build(BuildArgs),
    /// Stop everything gracefully and free every port
    Down,
    /// List the running instances
    Ps(PsArgs),
    /// Show the services' logs
    Logs(LogsArgs),
    /// Restart services' instances, one after another [default: every service]
    Restart(ServicesArg),
    /// Stop services' instances, leaving msctl and the rest running [default: every service]
    Stop(ServicesArg),
    /// Run more or fewer instances of services: `posts=3`, `posts=+1`, `posts=-1`
    Scale(ScaleArgs),
    /// SIGKILL one instance (`posts-2`) or every instance of a service, as a crash would
    Kill(KillArgs),
    /// Inject latency and errors into calls to a service or instance; `msctl fault clear`
    Fault(FaultArgs),
    /// Start stopped services and what they depend on [default: every service]
    Start(ServicesArg),
    /// Rebuild and replace services when their files change, with no dropped request
    Watch(WatchArgs),
    /// Probe every instance now; exit 0 only when all are healthy
    Health(JsonArg),
    /// Send one HTTP request into the system: through the gateway, or straight to the service
    /// the path names when there is no gateway, unless --service says otherwise
    Call(CallArgs),
    /// Run a one-off command with the environment an instance of a service gets (as `docker
    /// compose run`): a migration, a shell, a script that calls the running system
    #[command(
        after_help = "Examples:\n  msctl run users -- sqlite3 .msctl/data/users/users.db\n  msctl run api -- python manage.py migrate\n  msctl run worker              the service's own command, once, in the foreground"
    )]
    Run(RunArgs),
    /// List recent traces, newest first; or export them as OTLP
    Traces(TracesArgs),
    /// Show one trace as a waterfall
    Trace(TraceArgs),
    /// Events on the message bus: published, relayed, applied, with their trace ids
    Events(EventsArgs),
    /// Requests per second, error rate and latency per service and route, live
    Top(TopArgs),
    /// Write the system as files for another engine: Kubernetes manifests, Containerfiles
    Export(ExportArgs),
    /// Print the web dashboard's address (with its session token) and open it in a browser
    Dashboard(DashboardArgs),
    /// Print the app's address (the gateway, leading to the web UI) and open it in a browser
    Open(OpenArgs),
    /// Write an msctl.toml for the project here: found from its files, or from a Procfile or
    /// compose file
    Init(InitArgs),
    /// Add a new service from a template, wired into the workspace and msctl.toml
    Scaffold(ScaffoldArgs),
    /// Check msctl.toml and print it as msctl reads it: services in start order, defaults filled
    /// in, `${VARS}` expanded
    Config(ConfigArgs),
    /// Print a shell completion script
    Completions(CompletionsArgs),
    /// Run the supervisor for `up -d` (internal)
    #[command(hide = true)]
    Supervise(SuperviseArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Services to start, with what they depend on [default: all]
    pub services: Vec<String>,
    /// Return once everything is healthy, leaving a supervisor in the background
    #[arg(short, long)]
    pub detach: bool,
    /// Skip the build step
    #[arg(long)]
    pub no_build: bool,
    /// Run N instances of SERVICE instead of its `replicas` (repeatable); on a running system,
    /// scale it as `msctl scale` does
    #[arg(long, value_name = "SERVICE=N", value_parser = parse_scale)]
    pub scale: Vec<(String, Replicas)>,
    /// Rebuild and replace services when their files change (see `msctl watch`)
    #[arg(short, long)]
    pub watch: bool,
    /// Also start the services with this profile (repeatable, or comma-separated) [default:
    /// MSCTL_PROFILES, from the environment or the project's .env]
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub profile: Vec<String>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  msctl watch            watch until Ctrl-C, one line per rebuild\n  msctl watch -d         leave the supervisor watching, and return\n  msctl watch --off      stop watching\n  msctl watch --json     one JSON object per rebuild, for tools"
)]
pub struct WatchArgs {
    /// Turn watching on in the supervisor and return; `msctl watch --off` ends it
    #[arg(short, long, conflicts_with = "off")]
    pub detach: bool,
    /// Stop watching
    #[arg(long)]
    pub off: bool,
    /// Print one JSON object per rebuild instead of a line
    #[arg(long, conflicts_with = "off")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  msctl config -q            check msctl.toml (exit 3 and the error when it is broken), print nothing\n  msctl config --services    the service names, in start order\n  msctl config --json | jq   every setting, for scripts"
)]
pub struct ConfigArgs {
    /// Only check: print nothing, exit 0 when msctl.toml is valid
    #[arg(short, long, conflicts_with_all = ["services", "json"])]
    pub quiet: bool,
    /// Print the service names only, one a line, in start order
    #[arg(long, conflicts_with = "json")]
    pub services: bool,
    /// Print JSON (a list of services in start order) instead of TOML
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// SERVICE=N for exactly N instances, SERVICE=+N or SERVICE=-N for N more or fewer
    #[arg(required = true, value_name = "SERVICE=N", value_parser = parse_scale)]
    pub targets: Vec<(String, Replicas)>,
}

pub use msctl_contract::control::Replicas;

/// `posts=3`, `posts=+1` or `posts=-1`.
pub fn parse_scale(text: &str) -> Result<(String, Replicas), String> {
    let usage = || format!("`{text}` is not SERVICE=N, SERVICE=+N or SERVICE=-N (say `posts=3`)");
    let (name, count) = text.split_once('=').ok_or_else(usage)?;
    if name.is_empty() {
        return Err(usage());
    }
    let replicas = match count.as_bytes().first() {
        Some(b'+') | Some(b'-') => Replicas::By(count.parse().map_err(|_| usage())?),
        _ => Replicas::To(count.parse().map_err(|_| usage())?),
    };
    Ok((name.to_string(), replicas))
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// A service (every instance) or one instance, such as `posts-2`
    pub target: String,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  msctl fault posts-2 --error-rate 1\n  msctl fault posts --delay 3s --for 30s\n  msctl fault clear"
)]
pub struct FaultArgs {
    /// A service, one instance (`posts-2`), or `clear` to end every fault (or `clear TARGET`)
    pub target: String,
    /// With `clear`: the one target whose fault ends
    pub cleared: Option<String>,
    /// Wait this long before each call, such as 200ms
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub delay: Option<std::time::Duration>,
    /// Answer this share of calls (0 to 1) with --status instead of sending them
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub error_rate: Option<f64>,
    /// The status of an injected error
    #[arg(long, default_value_t = 503, value_parser = clap::value_parser!(u16).range(100..=599))]
    pub status: u16,
    /// End the fault after this long [default: until cleared]
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub lasting: Option<std::time::Duration>,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration such as 200ms, 3s or 1m: {e}"))
}

/// A moment, given as a time ago (`10m`) or as a date and time (`2026-11-28T09:30:00Z`; with
/// no zone it is UTC).
fn parse_moment(text: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return std::time::SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| format!("`{text}` ago is before the clock's start"));
    }
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).map_err(|_| {
        format!(
            "`{text}` is neither a time ago such as 10m or 1h30m nor a moment such as 2026-11-28T09:30:00Z"
        )
    })
}

fn parse_rate(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| format!("`{text}` is not a rate from 0 to 1, such as 0.3"))
}

#[derive(Debug, Args)]
pub struct ServicesArg {
    /// Services, named as in msctl.toml [default: every service]
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Services whose build steps to run, and those of what they depend on, as `up SERVICE`
    /// would [default: every service]
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Only these services' instances [default: all]
    pub services: Vec<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only these services' instances [default: all]
    pub services: Vec<String>,
    /// Keep printing new lines, across restarts, until the system stops
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each instance
    #[arg(short = 'n', long = "tail", value_name = "N")]
    pub tail: Option<usize>,
    /// Show when msctl read each line (UTC, to the millisecond)
    #[arg(short, long)]
    pub timestamps: bool,
    /// Only lines from this time on: a time ago (10m, 1h30m) or a moment (2026-11-28T09:30:00Z)
    #[arg(long, value_name = "WHEN", value_parser = parse_moment)]
    pub since: Option<std::time::SystemTime>,
    /// Only lines before this time: a time ago or a moment, as for --since
    #[arg(long, value_name = "WHEN", value_parser = parse_moment)]
    pub until: Option<std::time::SystemTime>,
    /// The log records of one trace (an id, a prefix of 4+ characters, or `last`), across
    /// services, in time order
    #[arg(long, value_name = "ID", conflicts_with_all = ["follow", "tail", "services"])]
    pub trace: Option<String>,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// PATH, or METHOD PATH: `users/1/posts`, `POST /users` [default method: GET, or POST with
    /// a body]
    #[arg(value_name = "REQUEST", num_args = 1..=2, required = true)]
    pub request: Vec<String>,
    /// The request body, or @FILE to read it from a file (@- from standard input)
    #[arg(short = 'd', long = "data", value_name = "BODY")]
    pub data: Option<String>,
    /// A request header, 'Name: value'; repeatable
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Print one JSON object: status, headers, body, duration, trace id
    #[arg(long)]
    pub json: bool,
    /// Show this request's trace waterfall after the answer
    #[arg(long)]
    pub trace: bool,
    /// Call an instance of this service directly [default: the gateway, or with none, the
    /// service the path starts with]
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// How long to wait for the answer to begin, and then for each next part of it: 30s, 2m, or
    /// 0 for no limit (a stream that never ends)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct TracesArgs {
    #[command(subcommand)]
    pub action: Option<TracesAction>,
    /// Only traces that touched this service
    #[arg(long, global = true)]
    pub service: Option<String>,
    /// Only traces whose route contains this text
    #[arg(long, global = true)]
    pub route: Option<String>,
    /// Only traces with a failed span
    #[arg(long, global = true)]
    pub errors: bool,
    /// Only traces at least this long, such as 10ms, 2s or 1m 30s
    #[arg(long, global = true, value_name = "DURATION")]
    pub min_duration: Option<String>,
    /// At most this many traces
    #[arg(long, global = true, default_value_t = 20, value_name = "N")]
    pub limit: usize,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TracesAction {
    /// Send the stored spans to an OpenTelemetry receiver as OTLP/HTTP JSON
    Export {
        /// The receiver's base URL; spans go to URL/v1/traces
        #[arg(long, value_name = "URL")]
        otlp: String,
    },
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// A trace id (or a unique prefix of at least 4 characters), or `last`
    pub id: String,
    /// Print the trace's spans as JSON
    #[arg(long)]
    pub json: bool,
    /// Show each span's log records under the waterfall
    #[arg(long)]
    pub logs: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  msctl events                      the last events and where each one is\n  msctl events -f --subject 'user.*' follow them as they flow\n  msctl events --json               one object per event"
)]
pub struct EventsArgs {
    /// Keep printing events as they are published, relayed and applied, until Ctrl-C
    #[arg(short, long)]
    pub follow: bool,
    /// Only this subject; `*` stands for one token and a final `>` for the rest (`user.*`)
    #[arg(long, value_name = "SUBJECT")]
    pub subject: Option<String>,
    /// At most this many events (the newest)
    #[arg(short = 'n', long, default_value_t = 20, value_name = "N")]
    pub limit: usize,
    /// Print JSON: an array, or one object per line with --follow
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub target: ExportTarget,
}

#[derive(Debug, Subcommand)]
pub enum ExportTarget {
    /// Kubernetes manifests: a workload and a Service per service, a collector, a kustomization
    Kubernetes {
        /// The folder to write into
        #[arg(long, default_value = "k8s", value_name = "DIR")]
        out: PathBuf,
        /// The namespace everything goes in
        #[arg(long, default_value = "msctl", value_name = "NS")]
        namespace: String,
        /// Put before each service's image name: `registry.example.com/shop/`
        #[arg(long, default_value = "", value_name = "PREFIX")]
        image_prefix: String,
        /// The images' tag
        #[arg(long, default_value = "latest", value_name = "TAG")]
        tag: String,
    },
    /// A Containerfile per image to build (Rust binaries, Python and Node services) and a
    /// build.sh that tags them as the Kubernetes export names them
    Containerfiles {
        /// The folder to write into
        #[arg(long, default_value = "containers", value_name = "DIR")]
        out: PathBuf,
        /// Put before each image's name: `registry.example.com/shop/`
        #[arg(long, default_value = "", value_name = "PREFIX")]
        image_prefix: String,
        /// The images' tag
        #[arg(long, default_value = "latest", value_name = "TAG")]
        tag: String,
    },
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  msctl init                          look at this folder and write msctl.toml\n  msctl init --dry-run                print it instead\n  msctl init --from Procfile -c web=2 import a Procfile, two web processes\n  msctl init --from compose.yaml      import a compose file"
)]
pub struct InitArgs {
    /// Import this Procfile or compose file instead of looking at the folder
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Replace an existing msctl.toml
    #[arg(long)]
    pub force: bool,
    /// Print the file, and what was found, without writing anything
    #[arg(long)]
    pub dry_run: bool,
    /// Instances per Procfile process type, as foreman and honcho take it: `web=2,worker=1`
    #[arg(short, long, value_name = "TYPE=N", value_parser = parse_concurrency)]
    pub concurrency: Vec<Vec<(String, u32)>>,
}

fn parse_concurrency(s: &str) -> Result<Vec<(String, u32)>, String> {
    crate::init::procfile::parse_concurrency(s)
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The service whose environment (its `env`, `env_file`, data folder, registry and a free
    /// port) the command gets
    pub service: String,
    /// The command and its arguments, after `--` [default: the service's own command]
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct OpenArgs {
    /// Only print the address; do not start a browser
    #[arg(long)]
    pub no_open: bool,
}

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Only print the address; do not start a browser
    #[arg(long)]
    pub no_open: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The sliding window the figures cover, such as 10s or 1m
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub window: String,
    /// Print one snapshot as JSON and exit
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ScaffoldArgs {
    /// The new service's name: lowercase letters, digits and dashes, starting with a letter
    #[arg(required_unless_present = "list_templates")]
    pub name: Option<String>,
    /// A service the new one calls; its example route makes a traced call to it. Repeatable
    #[arg(long = "dep", value_name = "SERVICE")]
    pub deps: Vec<String>,
    /// A fixed port [default: automatic]
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// The template to use, from templates/ or built in
    #[arg(long, default_value = "service", value_name = "NAME")]
    pub template: String,
    /// Print what would be created, and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// List the templates and exit
    #[arg(long)]
    pub list_templates: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print completions for
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    pub services: Vec<String>,
    #[arg(long)]
    pub watch: bool,
    #[arg(long, value_parser = parse_scale)]
    pub scale: Vec<(String, Replicas)>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
