//! `msctl stop [SERVICE…]`: stops services' instances, through the running supervisor, which keeps running.

use crate::cli::ServicesArg;
use crate::cmd::Context;
use msctl_contract::control::Request;

pub async fn stop(ctx: &Context, args: ServicesArg) -> anyhow::Result<u8> {
    // Dependents first, so that none is left calling a service that has already gone.
    let request = |service| Request::Stop { service };
    super::act_on_services(ctx, &args.services, true, request, "stopped").await?;
    Ok(0)
}
