//! `msctl scale SERVICE=N…`: more or fewer instances of running services; extra ones are
//! drained before they stop.

use crate::cli::ScaleArgs;
use crate::cmd::Context;
use msctl_contract::control::{Replicas, Request};

pub async fn scale(ctx: &Context, args: ScaleArgs) -> anyhow::Result<u8> {
    for (service, replicas) in args.targets {
        super::act_on_service(ctx, &service, |service| Request::Scale {
            service,
            replicas,
        })
        .await?;
        match replicas {
            Replicas::To(n) => say!("{service} scaled to {n}"),
            Replicas::By(d) => say!("{service} scaled by {d:+}"),
        }
    }
    Ok(0)
}
