//! Starts the posts service from the environment contract.

use msctl_kit::Kit;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let kit = match Kit::from_env("posts", env!("CARGO_PKG_VERSION")) {
        Ok(kit) => kit,
        Err(e) => return msctl_kit::server::fail(&e),
    };
    let opened = kit.data_dir().map_err(|e| e.to_string()).and_then(|dir| {
        posts::Posts::open(&dir.join("posts.db"), kit.peers.clone())
            .map_err(|e| format!("cannot open the posts database: {e}"))
    });
    match opened {
        Ok(posts) => {
            // Every posts instance shares the durable consumer `posts`: each event goes to one.
            let applier = posts.clone();
            msctl_kit::bus::consume(kit.discovery(), "user.deleted", "posts", move |event| {
                applier.on_user_deleted(event)
            });
            kit.serve(posts::app(posts)).await
        }
        Err(e) => msctl_kit::server::fail(&e),
    }
}
