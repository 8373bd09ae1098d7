//! `msctl restart SERVICE`: restarts a service's instances, one after another, through the running supervisor.

use crate::cli::ServiceArg;
use crate::cmd::Context;

pub async fn restart(ctx: &Context, args: ServiceArg) -> anyhow::Result<u8> {
    super::act_on_service(ctx, &args.service, "restart").await?;
    eprintln!("{} restarted", args.service);
    Ok(0)
}
