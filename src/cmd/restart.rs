//! `msctl restart [SERVICE…]`: restarts services' instances, one after another, through the running supervisor.

use crate::cli::ServicesArg;
use crate::cmd::Context;
use msctl_contract::control::Request;

pub async fn restart(ctx: &Context, args: ServicesArg) -> anyhow::Result<u8> {
    // Dependencies first, as `up` starts them: each service comes back to peers already renewed.
    let request = |service| Request::Restart { service };
    super::act_on_services(ctx, &args.services, false, request, "restarted").await?;
    Ok(0)
}
