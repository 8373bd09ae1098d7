//! Starts the API gateway from the environment contract.

use msctl_kit::Kit;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let mut kit = match Kit::from_env("gateway", env!("CARGO_PKG_VERSION")) {
        Ok(kit) => kit,
        Err(e) => return msctl_kit::server::fail(&e),
    };
    kit.body_limit = gateway::BODY_LIMIT;
    let state = gateway::Gateway {
        peers: kit.peers.clone(),
        own_name: kit.env.service.clone(),
    };
    // Requests for other services take the kit's proxy path; the app answers the rest.
    kit.serve_proxy(gateway::app(state.clone()), state).await
}
