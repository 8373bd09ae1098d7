//! `msctl completions SHELL`: a completion script on stdout.

use crate::cli::{Cli, CompletionsArgs};
use clap::CommandFactory;

pub fn completions(args: CompletionsArgs) -> anyhow::Result<u8> {
    // Rendered first: clap_complete panics on a write error, and stdout may be a closed pipe.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "msctl", &mut script);
    crate::output::stdout_bytes(&script)?;
    Ok(0)
}
