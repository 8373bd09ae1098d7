//! Starts the users service from the environment contract.

use msctl_kit::Kit;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let kit = match Kit::from_env("users", env!("CARGO_PKG_VERSION")) {
        Ok(kit) => kit,
        Err(e) => return msctl_kit::server::fail(&e),
    };
    let opened = kit.data_dir().map_err(|e| e.to_string()).and_then(|dir| {
        users::Users::open(&dir.join("users.db"))
            .map_err(|e| format!("cannot open the users database: {e}"))
    });
    match opened {
        Ok(users) => {
            let users = users.relay_events(kit.discovery());
            kit.serve(users::app(users)).await
        }
        Err(e) => msctl_kit::server::fail(&e),
    }
}
