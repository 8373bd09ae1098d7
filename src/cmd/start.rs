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
    let (skipped, started): (Vec<_>, Vec<_>) = services
        .iter()
        .map(|s| (s, super::absent_because(&project, s)))
        .partition(|(_, absent)| absent.is_some());
    if !started.is_empty() {
        let names: Vec<&str> = started.iter().map(|(s, _)| s.as_str()).collect();
        say!("{} started", names.join(", "));
    }
    for (service, reason) in skipped {
        say!("{service} skipped: {}", reason.unwrap_or_default());
    }
    Ok(0)
}
