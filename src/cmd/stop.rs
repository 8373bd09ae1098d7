//! `msctl stop SERVICE`: stops a service's instances, through the running supervisor.

use crate::cli::ServiceArg;
use crate::cmd::Context;
use msctl_contract::control::Request;

pub async fn stop(ctx: &Context, args: ServiceArg) -> anyhow::Result<u8> {
    super::act_on_service(ctx, &args.service, |service| Request::Stop { service }).await?;
    say!("{} stopped", args.service);
    Ok(0)
}
