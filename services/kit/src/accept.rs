//! Accepting connections so that every serving thread holds an even share of them.
//!
//! Each serving thread runs its own runtime and polls the one listening socket. The thread that
//! is awake when connections arrive takes them: in one wrk run of 32 connections the gateway's two
//! threads held 27 and 6, and a thread's connections stay with it for their lives. The busy
//! thread then answered in turn while the other slept and woke for each request. Runs with even
//! shares reached 40,000 requests a second, runs with 27 and 6 reached 34,000, all in one
//! minute. nginx evens its workers out differently: it closes a client's connection after 1,000
//! requests, and the client connects again. Here a thread that holds two more connections than
//! the lightest passes a new one on to it, once, when it is accepted.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A connection passed from the thread that accepted it to the one that serves it.
type Passed = (std::net::TcpStream, SocketAddr);

/// What the serving threads share: how many connections each holds, and a way to pass one on.
#[derive(Debug)]
struct Shares {
    open: Box<[AtomicUsize]>,
    inboxes: Box<[mpsc::UnboundedSender<Passed>]>,
}

/// One serving thread's side of the listening socket.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    me: usize,
    shares: Arc<Shares>,
    inbox: mpsc::UnboundedReceiver<Passed>,
}

/// Counts a connection against its thread's share until it is dropped.
#[derive(Debug)]
pub struct Held {
    shares: Arc<Shares>,
    at: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shares.open[self.at].fetch_sub(1, Ordering::Relaxed);
    }
}

/// The thread a connection accepted by `me` should go to: the one holding the fewest, when it
/// holds at least two fewer than `me` (so that short connections are not passed back and forth),
/// else `me`.
pub fn serving_thread(me: usize, open: &[usize]) -> usize {
    let (lightest, fewest) = open
        .iter()
        .copied()
        .enumerate()
        .min_by_key(|&(_, n)| n)
        .unwrap_or((me, 0));
    if fewest + 2 <= open[me] { lightest } else { me }
}

/// One acceptor per serving thread, `threads` of them, over the same listening socket. Each is
/// turned into its thread's runtime's listener by [`Pending::start`] on that thread.
pub fn acceptors(
    listener: &std::net::TcpListener,
    threads: usize,
) -> std::io::Result<Vec<Pending>> {
    let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..threads.max(1))
        .map(|_| mpsc::unbounded_channel())
        .unzip();
    let shares = Arc::new(Shares {
        open: (0..inboxes.len()).map(|_| AtomicUsize::new(0)).collect(),
        inboxes: inboxes.into_boxed_slice(),
    });
    receivers
        .into_iter()
        .enumerate()
        .map(|(me, inbox)| {
            Ok(Pending {
                listener: listener.try_clone()?,
                me,
                shares: shares.clone(),
                inbox,
            })
        })
        .collect()
}

/// An acceptor not yet tied to a runtime: it is built on one thread and started on another.
#[derive(Debug)]
pub struct Pending {
    listener: std::net::TcpListener,
    me: usize,
    shares: Arc<Shares>,
    inbox: mpsc::UnboundedReceiver<Passed>,
}

impl Pending {
    /// Registers the socket with the current runtime. The socket must be non-blocking.
    pub fn start(self) -> std::io::Result<Acceptor> {
        Ok(Acceptor {
            listener: TcpListener::from_std(self.listener)?,
            me: self.me,
            shares: self.shares,
            inbox: self.inbox,
        })
    }
}

impl Acceptor {
    /// The next connection this thread serves: one passed to it, or one it accepted and keeps.
    /// Cancel-safe. Errors are the listening socket's.
    pub async fn next(&mut self) -> std::io::Result<(TcpStream, SocketAddr, Held)> {
        loop {
            let (stream, addr) = tokio::select! {
                biased;
                Some((stream, addr)) = self.inbox.recv() => {
                    let held = Held { shares: self.shares.clone(), at: self.me };
                    match TcpStream::from_std(stream) {
                        Ok(stream) => return Ok((stream, addr, held)),
                        // The connection's problem, not the listener's: it is dropped.
                        Err(_) => continue,
                    }
                }
                accepted = self.listener.accept() => accepted?,
            };
            // Requests are small and answered at once: waiting to fill a segment only adds
            // latency, and a streamed answer's body would wait for the ack of its head.
            let _ = stream.set_nodelay(true);
            let open: Vec<usize> = (self.shares.open.iter())
                .map(|n| n.load(Ordering::Relaxed))
                .collect();
            let to = serving_thread(self.me, &open);
            if to != self.me {
                // Counted before it is sent, so that the next accept anywhere sees it; the
                // receiving thread's `Held` gives it back.
                self.shares.open[to].fetch_add(1, Ordering::Relaxed);
                let Ok(stream) = stream.into_std() else {
                    self.shares.open[to].fetch_sub(1, Ordering::Relaxed);
                    continue;
                };
                let Err(back) = self.shares.inboxes[to].send((stream, addr)) else {
                    continue;
                };
                // That thread has stopped serving: this one keeps the connection.
                self.shares.open[to].fetch_sub(1, Ordering::Relaxed);
                let (stream, addr) = back.0;
                match TcpStream::from_std(stream) {
                    Ok(stream) => return Ok(self.keep(stream, addr)),
                    Err(_) => continue,
                }
            }
            return Ok(self.keep(stream, addr));
        }
    }

    fn keep(&self, stream: TcpStream, addr: SocketAddr) -> (TcpStream, SocketAddr, Held) {
        self.shares.open[self.me].fetch_add(1, Ordering::Relaxed);
        let held = Held {
            shares: self.shares.clone(),
            at: self.me,
        };
        (stream, addr, held)
    }
}

/// A connection served by hyper through axum, counted against its thread until it closes.
#[derive(Debug)]
pub struct Counted {
    stream: TcpStream,
    _held: Held,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for Acceptor {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.next().await {
                Ok((stream, addr, held)) => {
                    return (
                        Counted {
                            stream,
                            _held: held,
                        },
                        addr,
                    );
                }
                // A connection reset while queued is that connection's problem.
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of descriptors, most likely: wait, as axum's own listener does.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// An accept error that is one connection's, not the listening socket's.
pub fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_connection_goes_to_the_lightest_thread_only_when_this_one_holds_two_more() {
        assert_eq!(serving_thread(0, &[0, 0]), 0);
        assert_eq!(serving_thread(0, &[1, 0]), 0, "one more is even enough");
        assert_eq!(serving_thread(0, &[2, 0]), 1);
        assert_eq!(serving_thread(1, &[2, 0]), 1, "the lightest keeps its own");
        assert_eq!(serving_thread(2, &[5, 3, 9, 4]), 1, "the fewest of all");
        assert_eq!(serving_thread(0, &[7]), 0, "one thread keeps everything");
    }

    /// A listener on a free loopback port and `threads` acceptors over it, all on this runtime.
    fn listening(threads: usize) -> (SocketAddr, Vec<Acceptor>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptors = acceptors(&listener, threads)
            .unwrap()
            .into_iter()
            .map(|pending| pending.start().unwrap())
            .collect();
        (addr, acceptors)
    }

    fn open(acceptor: &Acceptor) -> Vec<usize> {
        acceptor
            .shares
            .open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    #[tokio::test]
    async fn connections_one_thread_accepts_are_shared_with_the_other() {
        let (addr, mut acceptors) = listening(2);
        let mut clients = connect(addr, 6).await;
        // The first thread accepts all six; it keeps those it should and passes the rest on.
        let mut kept = Vec::new();
        while kept.len() < 4 {
            kept.push(acceptors[0].next().await.unwrap());
        }
        let mut passed = Vec::new();
        while passed.len() < 2 {
            passed.push(acceptors[1].next().await.unwrap());
        }
        assert_eq!(open(&acceptors[0]), [4, 2]);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), acceptors[1].next())
                .await
                .is_err(),
            "nothing more was passed"
        );
        // A passed connection is the client's own: what one end writes, the other reads.
        let (stream, from, _held) = &mut passed[0];
        let client = clients
            .iter_mut()
            .find(|c| c.local_addr().unwrap() == *from)
            .expect("the peer address is a client's");
        client.write_all(b"ping").await.unwrap();
        let mut read = [0u8; 4];
        stream.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"ping");
        stream.write_all(b"pong").await.unwrap();
        client.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"pong");
        // A connection that ends no longer counts.
        drop(passed);
        kept.truncate(1);
        assert_eq!(open(&acceptors[0]), [1, 0]);
    }

    #[tokio::test]
    async fn a_thread_that_stopped_serving_is_passed_nothing() {
        let (addr, mut acceptors) = listening(2);
        let gone = acceptors.pop().unwrap();
        drop(gone);
        let _clients = connect(addr, 3).await;
        let mut kept = Vec::new();
        for _ in 0..3 {
            kept.push(acceptors[0].next().await.unwrap());
        }
        assert_eq!(open(&acceptors[0]), [3, 0], "all kept, none lost");
    }

    /// `n` clients connected to `addr`.
    async fn connect(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
        let mut clients = Vec::new();
        for _ in 0..n {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        clients
    }
}
