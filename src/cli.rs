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
    /// Stop everything gracefully and free every port
    Down,
    /// List the running instances
    Ps(JsonArg),
    /// Show the services' logs
    Logs(LogsArgs),
    /// Restart a service's instances, one after another
    Restart(ServiceArg),
    /// Stop a service's instances, leaving the rest running
    Stop(ServiceArg),
    /// Start a stopped service (and what it depends on)
    Start(ServiceArg),
    /// Probe every instance now; exit 0 only when all are healthy
    Health(JsonArg),
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
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServiceArg {
    /// The service's name, as in msctl.toml
    pub service: String,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only this service's instances [default: all]
    pub service: Option<String>,
    /// Keep printing new lines, across restarts, until the system stops
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each instance
    #[arg(short = 'n', long = "tail", value_name = "N")]
    pub tail: Option<usize>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print completions for
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    pub services: Vec<String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
