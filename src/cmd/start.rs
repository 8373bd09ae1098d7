//! `msctl start SERVICE`: starts a stopped service and what it depends on, through the running supervisor.

use crate::cli::ServiceArg;
use crate::cmd::Context;
use msctl_contract::control::Request;

pub async fn start(ctx: &Context, args: ServiceArg) -> anyhow::Result<u8> {
    super::act_on_service(ctx, &args.service, |s| Request::Start { services: vec![s] }).await?;
    say!("{} started", args.service);
    Ok(0)
}
