//! `msctl restart SERVICE`: restarts a service's instances, one after another, through the running supervisor.

use crate::cli::ServiceArg;
use crate::cmd::Context;
use msctl_contract::control::Request;

pub async fn restart(ctx: &Context, args: ServiceArg) -> anyhow::Result<u8> {
    super::act_on_service(ctx, &args.service, |service| Request::Restart { service }).await?;
    say!("{} restarted", args.service);
    Ok(0)
}
