//! Printing that never panics. Standard output may be a pipe whose reader has gone (`msctl logs |
//! head -1`): `outln!` returns the error, and `run` ends the command quietly on a broken pipe.
//! Standard error may be a closed terminal (SIGHUP) while the supervisor is still stopping
//! services: `say!` drops what cannot be written, so the stop goes on.

use std::io::Write;

/// Writes one line to stdout; `Err` when stdout is gone.
macro_rules! outln {
    () => { $crate::output::stdout_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::stdout_line(format_args!($($arg)*)) };
}

/// Writes one line to stderr, ignoring a stderr that is gone.
macro_rules! say {
    ($($arg:tt)*) => { $crate::output::stderr_line(format_args!($($arg)*)) };
}

pub fn stdout_line(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|_| out.write_all(b"\n"))
        .map_err(named)
}

/// Writes bytes to stdout as they are; `Err` when stdout is gone.
pub fn stdout_bytes(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(named)
}

/// The error with what could not be written said (`msctl ps > /dev/full` said only "No space
/// left on device"); its kind is kept, so a broken pipe is still recognised as one.
fn named(e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("cannot write to standard output: {e}"))
}

pub fn stderr_line(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|_| err.write_all(b"\n"));
}

/// Whether `e` comes from writing to a reader that has gone away.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Whether stdout is a pipe whose reader has gone (or a terminal that hung up). A follower with
/// nothing new to write would otherwise learn of it only with its next line, which may never
/// come: `msctl logs -f | head -c 100` went on for ever once `head` was done.
#[cfg(unix)]
pub fn reader_gone() -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let out = std::io::stdout();
    let mut fds = [PollFd::new(out.as_fd(), PollFlags::empty())];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

#[cfg(not(unix))]
pub fn reader_gone() -> bool {
    false
}
