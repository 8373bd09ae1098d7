//! `msctl build [SERVICE…]`: the build steps `up` runs, each distinct command once, with nothing started.

use crate::build_step;
use crate::cli::BuildArgs;
use crate::cmd::Context;
use crate::error::MsctlError;

pub async fn build(ctx: &Context, args: BuildArgs) -> anyhow::Result<u8> {
    let (project, config) = ctx.load()?;
    // The same services `up SERVICE` would build: the named ones and what they depend on.
    super::check_names(&config, &args.services)?;
    let order = config
        .start_order(&args.services)
        .map_err(MsctlError::Usage)?;
    if order
        .iter()
        .all(|s| s.build.as_ref().is_none_or(Vec::is_empty))
    {
        say!("nothing to build: no service named has a build step");
        return Ok(0);
    }
    let mut signals = crate::supervisor::signals::Signals::install()
        .map_err(|e| MsctlError::Io(format!("cannot install signal handlers: {e}")))?;
    build_step::run(&project, &order, &mut signals).await?;
    Ok(0)
}
