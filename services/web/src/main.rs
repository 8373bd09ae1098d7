//! Starts the web service (the sample system's UI) from the environment contract.

use msctl_kit::Kit;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let kit = match Kit::from_env("web", env!("CARGO_PKG_VERSION")) {
        Ok(kit) => kit,
        Err(e) => return msctl_kit::server::fail(&e),
    };
    kit.serve(web::app(web::Web::from_env())).await
}
