//! `msctl trace ID|last`: one trace as a waterfall, or its spans as JSON.

use crate::cli::TraceArgs;
use crate::cmd::Context;
use crate::error::MsctlError;
use crate::traces;

pub async fn trace(ctx: &Context, args: TraceArgs) -> anyhow::Result<u8> {
    let project = ctx.project()?;
    let found = traces::find(&project, &args.id).map_err(MsctlError::NotFound)?;
    // Right after a request its spans may still be on their way from the services.
    let found = if traces::is_fresh(&found) {
        traces::settled(&project, &found.id).await
    } else {
        found
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&found.spans)?)?;
    } else {
        let width = console::Term::stdout()
            .size_checked()
            .map_or(80, |(_, w)| w as usize)
            .min(120);
        outln!("{}", crate::waterfall::render(&found, width))?;
    }
    Ok(0)
}
