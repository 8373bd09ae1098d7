//! `msctl start [SERVICE…]`: starts stopped services and what they depend on, through the running supervisor.

use crate::cli::ServicesArg;
use crate::cmd::Context;
use msctl_contract::control::Request;

pub async fn start(ctx: &Context, args: ServicesArg) -> anyhow::Result<u8> {
    let (project, config) = ctx.load()?;
    let services = super::services_in_order(&config, &args.services)?;
    let (_, client) = crate::running::require(&project).await?;
    let limit = super::call_limit(&config, &args.services);
    // One request: the supervisor starts them in dependency order, independent ones at once.
    let request = Request::Start {
        services: args.services.clone(),
    };
    super::control(&project, &config, &client, request, limit).await?;
    say!("{} started", services.join(", "));
    Ok(0)
}
