//! The sockets under ureq: this crate opens them itself so it can set TCP
//! keepalive on them, reach a Docker Engine's unix socket, and shut any of
//! them down from another thread.
//!
//! ureq's `unversioned::transport` API is how a connector plugs in; the crate
//! pins ureq's minor version because that API may change between minors.
//!
//! The chain mirrors the part of ureq's default one this crate needs: a
//! CONNECT proxy first (it opens its own socket to the proxy through the
//! whole chain again), then our socket, then TLS when the URL is `https`.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use socket2::{SockRef, Socket, TcpKeepalive};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    RustlsConnector, Transport,
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

/// What a thread runs just before each of its socket reads.
type ReadHook = Box<dyn FnMut(&ReadAhead<'_>)>;

thread_local! {
    /// This thread's read hook; see [`with_read_hook`].
    static BEFORE_READ: Cell<Option<ReadHook>> = const { Cell::new(None) };
}

/// A socket read about to be made, as the read hook sees it.
pub(crate) struct ReadAhead<'a> {
    socket: &'a Socket,
}

impl ReadAhead<'_> {
    /// Whether the read would wait for the network: the socket holds no
    /// byte yet. Costs a system call, so the hook asks only when it cares.
    pub(crate) fn would_wait(&self) -> bool {
        would_wait(self.socket)
    }
}

/// Runs `body` with `hook` called before each socket read on this thread.
/// A reader that holds results back while more input is on hand uses it to
/// pass them on before it would sleep ([`ReadAhead::would_wait`]), or once
/// it has held them through enough input. Without a hook, reads cost
/// nothing extra.
pub(crate) fn with_read_hook<T>(
    hook: impl FnMut(&ReadAhead<'_>) + 'static,
    body: impl FnOnce() -> T,
) -> T {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            BEFORE_READ.with(|slot| slot.set(None));
        }
    }
    BEFORE_READ.with(|slot| slot.set(Some(Box::new(hook))));
    let _clear = Clear;
    body()
}

/// Calls this thread's read hook, if it has one, before a read on `socket`.
fn before_read(socket: &Socket) {
    BEFORE_READ.with(|slot| {
        if let Some(mut hook) = slot.take() {
            hook(&ReadAhead { socket });
            slot.set(Some(hook));
        }
    });
}

/// Whether a read on `socket` would block now: nothing is buffered, and the
/// peer has neither sent more nor closed.
#[cfg(unix)]
fn would_wait(socket: &Socket) -> bool {
    let mut probe = [MaybeUninit::<u8>::uninit()];
    match socket.recv_with_flags(&mut probe, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Ok(_) => false,
        Err(err) => matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

/// Elsewhere, the check is not made and every read counts as a wait.
#[cfg(not(unix))]
fn would_wait(_socket: &Socket) -> bool {
    true
}

/// Where the connector opens its sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dial {
    /// TCP to the addresses ureq resolved from the URL (or from the proxy's).
    Tcp,
    /// The unix socket at this path, whatever host the URL names.
    Unix(PathBuf),
}

/// Lets another thread shut down the socket of a stream that is blocked in a
/// read. Cancelling is permanent: a connection made after it fails at once.
#[derive(Debug, Default)]
pub(crate) struct Cancel {
    /// Set under the lock, read without it on every event.
    cancelled: AtomicBool,
    socket: Mutex<Option<Socket>>,
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
    fn register(&self, socket: &Socket) -> io::Result<()> {
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

/// Opens sockets for ureq, TCP or unix: applies keepalive to TCP and hands
/// each socket to a [`Cancel`] when one is given. A connection an earlier
/// connector already made (a proxy tunnel) is passed on untouched.
pub(crate) struct SocketConnector {
    pub(crate) dial: Dial,
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) cancel: Option<Arc<Cancel>>,
}

impl fmt::Debug for SocketConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketConnector")
            .field("dial", &self.dial)
            .field("keepalive", &self.keepalive)
            .field("cancellable", &self.cancel.is_some())
            .finish()
    }
}

impl<In: Transport> Connector<In> for SocketConnector {
    type Out = Either<In, SocketTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if let Some(tunnel) = chained {
            return Ok(Some(Either::A(tunnel)));
        }
        let socket = match &self.dial {
            Dial::Tcp => {
                let socket = connect_tcp(details)?;
                socket.set_nodelay(details.config.no_delay())?;
                if let Some(keepalive) = self.keepalive {
                    let params = TcpKeepalive::new()
                        .with_time(keepalive.idle)
                        .with_interval(keepalive.interval)
                        .with_retries(keepalive.retries);
                    SockRef::from(&socket).set_tcp_keepalive(&params)?;
                }
                Socket::from(socket)
            }
            Dial::Unix(path) => connect_unix(path)?,
        };
        if let Some(cancel) = &self.cancel {
            cancel.register(&socket)?;
        }
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(SocketTransport {
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

/// Connects to a unix socket. A local connect either succeeds or fails at
/// once, so it needs no timeout.
#[cfg(unix)]
fn connect_unix(path: &std::path::Path) -> Result<Socket, ureq::Error> {
    let socket = std::os::unix::net::UnixStream::connect(path).map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("cannot connect to {}: {err}", path.display()),
        )
    })?;
    Ok(Socket::from(socket))
}

#[cfg(not(unix))]
fn connect_unix(path: &std::path::Path) -> Result<Socket, ureq::Error> {
    Err(ureq::Error::Io(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("unix sockets such as {} need a unix system", path.display()),
    )))
}

/// The connector chain: a CONNECT proxy when the agent's config names one,
/// our socket, then TLS for `https://` URLs (to the target, and to an
/// `https://` proxy when ureq connects to it through this same chain).
pub(crate) fn connector(
    dial: Dial,
    keepalive: Option<Keepalive>,
    cancel: Option<Arc<Cancel>>,
) -> impl Connector<()> {
    ConnectProxyConnector::default()
        .chain(SocketConnector {
            dial,
            keepalive,
            cancel,
        })
        .chain(RustlsConnector::default())
}

/// Name resolution to go with [`Dial`]: DNS for TCP; nothing for a unix
/// socket, whose URL host only fills the `Host` header.
#[derive(Debug)]
pub(crate) struct SocketResolver {
    unix: bool,
    dns: DefaultResolver,
}

impl SocketResolver {
    pub(crate) fn new(dial: &Dial) -> Self {
        SocketResolver {
            unix: matches!(dial, Dial::Unix(_)),
            dns: DefaultResolver::default(),
        }
    }
}

impl Resolver for SocketResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if !self.unix {
            return self.dns.resolve(uri, config, timeout);
        }
        // ureq wants at least one address; the unix connector ignores it.
        let mut addrs = self.empty();
        addrs.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
        Ok(addrs)
    }
}

/// A connected socket, TCP or unix, as ureq's transport: blocking reads and
/// writes with the per-phase timeouts ureq asks for.
pub(crate) struct SocketTransport {
    socket: Socket,
    buffers: LazyBuffers,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl fmt::Debug for SocketTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peer = self
            .socket
            .peer_addr()
            .ok()
            .map(|addr| match addr.as_socket() {
                Some(ip) => ip.to_string(),
                None => format!("{:?}", addr.as_pathname()),
            });
        f.debug_struct("SocketTransport")
            .field("peer", &peer)
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
        before_read(&self.socket);
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
        let mut probe = [MaybeUninit::<u8>::uninit()];
        let open = matches!(
            self.socket.peek(&mut probe),
            Err(ref err) if err.kind() == io::ErrorKind::WouldBlock
        );
        open && self.socket.set_nonblocking(false).is_ok()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::net::UnixStream;
    use std::rc::Rc;

    #[test]
    fn the_read_hook_runs_before_each_read_and_sees_whether_it_would_wait() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let socket = Socket::from(ours);
        let seen = Rc::new(RefCell::new(Vec::new()));
        let log = seen.clone();
        with_read_hook(
            move |read| log.borrow_mut().push(read.would_wait()),
            || {
                before_read(&socket);
                assert_eq!(*seen.borrow(), [true], "nothing to read: it would wait");
                theirs.write_all(b"x").unwrap();
                before_read(&socket);
                assert_eq!(*seen.borrow(), [true, false], "a byte is there");
                let mut byte = [0u8; 1];
                (&socket).read_exact(&mut byte).unwrap();
                before_read(&socket);
                assert_eq!(*seen.borrow(), [true, false, true], "drained again");
                drop(theirs);
                before_read(&socket);
                assert_eq!(
                    *seen.borrow(),
                    [true, false, true, false],
                    "the peer closed: a read returns at once"
                );
            },
        );
        before_read(&socket);
        assert_eq!(
            seen.borrow().len(),
            4,
            "the hook is gone once its body returns"
        );
    }
}
