//! `msctl completions SHELL`: a completion script on stdout.

use crate::cli::{Cli, CompletionsArgs};
use clap::CommandFactory;

pub fn completions(args: CompletionsArgs) -> anyhow::Result<u8> {
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "msctl",
        &mut std::io::stdout(),
    );
    Ok(0)
}
