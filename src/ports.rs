//! Loopback ports: picking free ones, and naming the process that holds a taken one.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// A free loopback port. Another process may still take it before the service binds; the
/// supervisor notices that and picks again.
pub fn pick() -> Option<u16> {
    portpicker::pick_unused_port()
}

/// Whether a service could bind `port` on loopback right now.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok()
}

/// The process listening on `port`, as `pid 123 (name)`, where the OS tells.
pub fn holder(port: u16) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let inodes = listening_inodes(port);
        if inodes.is_empty() {
            return None;
        }
        let holder = crate::supervisor::process::scan()
            .find(|p| p.sockets().iter().any(|s| inodes.contains(s)));
        if let Some(p) = holder {
            return Some(format!("pid {} ({})", p.pid, p.name()));
        }
        Some("another process".to_string())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = port;
        None
    }
}

/// Socket inodes listening on `port`, from /proc/net/tcp and tcp6.
#[cfg(target_os = "linux")]
fn listening_inodes(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT; state 0A is LISTEN; the inode is column 9.
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let listening_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && listening_port == Some(port) {
                found.push(inode.to_string());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_not_free_and_its_holder_is_named() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!is_free(port));
        #[cfg(target_os = "linux")]
        assert!(
            holder(port)
                .unwrap()
                .starts_with(&format!("pid {}", std::process::id()))
        );
        drop(listener);
        assert!(is_free(port));
    }
}
