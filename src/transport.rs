//! The sockets under ureq: this crate opens them itself so it can set TCP
//! keepalive on them and shut them down from another thread.
//!
//! ureq's `unversioned::transport` API is how a connector plugs in; the crate
//! pins ureq's minor version because that API may change between minors.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use socket2::{SockRef, TcpKeepalive};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
};

/// TCP keepalive settings for event-stream sockets.
///
/// A peer that vanishes without closing (a host powered off, a NAT entry
/// dropped) leaves a stream silent forever; keepalive probes notice it. The
/// defaults detect a dead peer in about a minute: first probe after 30 s of
/// silence, then one every 10 s, giving up after 3 unanswered probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence before the first probe. Default 30 s.
    pub idle: Duration,
    /// Time between probes. Default 10 s.
    pub interval: Duration,
    /// Unanswered probes before the connection counts as dead. Default 3.
    pub retries: u32,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(30),
            interval: Duration::from_secs(10),
            retries: 3,
        }
    }
}

/// Lets another thread shut down the socket of a stream that is blocked in a
/// read. Cancelling is permanent: a connection made after it fails at once.
#[derive(Debug, Default)]
pub(crate) struct Cancel {
    /// Set under the lock, read without it on every event.
    cancelled: AtomicBool,
    socket: Mutex<Option<TcpStream>>,
}

impl Cancel {
    /// Shuts down the registered socket and refuses new ones.
    pub(crate) fn cancel(&self) {
        let mut socket = self.socket.lock();
        self.cancelled.store(true, Ordering::Release);
        if let Some(socket) = socket.take() {
            // An error means the socket is already closed, which is the goal.
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Keeps a second handle on `socket` so that `cancel` can shut it down.
    fn register(&self, socket: &TcpStream) -> io::Result<()> {
        let mut slot = self.socket.lock();
        if self.is_cancelled() {
            let _ = socket.shutdown(Shutdown::Both);
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the stream was cancelled",
            ));
        }
        *slot = Some(socket.try_clone()?);
        Ok(())
    }

    /// Forgets the registered socket, so that the handle kept here does not
    /// hold the connection open once its stream is dropped.
    pub(crate) fn release(&self) {
        *self.socket.lock() = None;
    }
}

/// Opens TCP connections for ureq: applies keepalive and hands each socket to
/// a [`Cancel`] when one is given.
pub(crate) struct SocketConnector {
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) cancel: Option<Arc<Cancel>>,
}

impl fmt::Debug for SocketConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketConnector")
            .field("keepalive", &self.keepalive)
            .field("cancellable", &self.cancel.is_some())
            .finish()
    }
}

impl Connector<()> for SocketConnector {
    type Out = Box<dyn Transport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<()>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        debug_assert!(chained.is_none(), "the socket connector comes first");
        let socket = connect_tcp(details)?;
        socket.set_nodelay(details.config.no_delay())?;
        if let Some(keepalive) = self.keepalive {
            let params = TcpKeepalive::new()
                .with_time(keepalive.idle)
                .with_interval(keepalive.interval)
                .with_retries(keepalive.retries);
            SockRef::from(&socket).set_tcp_keepalive(&params)?;
        }
        if let Some(cancel) = &self.cancel {
            cancel.register(&socket)?;
        }
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Box::new(SocketTransport {
            socket,
            buffers,
            read_timeout: None,
            write_timeout: None,
        })))
    }
}

/// Tries each resolved address in turn within the connect timeout.
fn connect_tcp(details: &ConnectionDetails) -> Result<TcpStream, ureq::Error> {
    let timeout: Option<Duration> = details.timeout.not_zero().map(|t| *t);
    let mut last_err = None;
    for addr in details.addrs.iter() {
        let attempt = match timeout {
            Some(timeout) => TcpStream::connect_timeout(addr, timeout),
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(socket) => return Ok(socket),
            Err(err) if err.kind() == io::ErrorKind::TimedOut => {
                last_err = Some(ureq::Error::Timeout(details.timeout.reason));
            }
            Err(err) => last_err = Some(ureq::Error::Io(err)),
        }
    }
    Err(last_err.unwrap_or(ureq::Error::HostNotFound))
}

/// Wraps ureq's TLS connector after ours, so `https://` URLs work.
pub(crate) fn connector(
    keepalive: Option<Keepalive>,
    cancel: Option<Arc<Cancel>>,
) -> impl Connector<()> {
    SocketConnector { keepalive, cancel }
        .chain(ureq::unversioned::transport::RustlsConnector::default())
}

/// A connected socket as ureq's transport: blocking reads and writes with the
/// per-phase timeouts ureq asks for.
struct SocketTransport {
    socket: TcpStream,
    buffers: LazyBuffers,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl fmt::Debug for SocketTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketTransport")
            .field("peer", &self.socket.peer_addr().ok())
            .finish()
    }
}

/// Sets a socket timeout only when it changes, sparing a system call per read.
fn update_timeout(
    current: &mut Option<Duration>,
    wanted: Option<Duration>,
    set: impl FnOnce(Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    if *current != wanted {
        set(wanted)?;
        *current = wanted;
    }
    Ok(())
}

/// Whether a read or write stopped at its socket timeout. On Unix that is
/// `EAGAIN`; `ETIMEDOUT` there means the peer stopped answering keepalive
/// probes, a dead connection rather than a timeout.
fn timed_out(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
        || (cfg!(windows) && err.kind() == io::ErrorKind::TimedOut)
}

impl Transport for SocketTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        let socket = &self.socket;
        update_timeout(
            &mut self.write_timeout,
            timeout.not_zero().map(|t| *t),
            |t| socket.set_write_timeout(t),
        )?;
        let output = &self.buffers.output()[..amount];
        match (&self.socket).write_all(output) {
            Ok(()) => Ok(()),
            Err(err) if timed_out(&err) => Err(ureq::Error::Timeout(timeout.reason)),
            Err(err) => Err(err.into()),
        }
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let socket = &self.socket;
        update_timeout(
            &mut self.read_timeout,
            timeout.not_zero().map(|t| *t),
            |t| socket.set_read_timeout(t),
        )?;
        let input = self.buffers.input_append_buf();
        let amount = loop {
            match (&self.socket).read(input) {
                Ok(amount) => break amount,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if timed_out(&err) => return Err(ureq::Error::Timeout(timeout.reason)),
                Err(err) => return Err(err.into()),
            }
        };
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        // An idle pooled connection is usable when a non-blocking read finds
        // nothing to read: no bytes the server should not have sent, no EOF.
        if self.socket.set_nonblocking(true).is_err() {
            return false;
        }
        let mut probe = [0u8; 1];
        let open = matches!(
            self.socket.peek(&mut probe),
            Err(ref err) if err.kind() == io::ErrorKind::WouldBlock
        );
        open && self.socket.set_nonblocking(false).is_ok()
    }
}
