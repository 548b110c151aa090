//! Helpers shared by the integration tests: a small HTTP server whose every
//! connection runs a script, fixture loading, and waiting with deadlines.

#![allow(dead_code)]

pub mod daemon;
pub mod docker;
pub mod fixtures;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// An event line with the given action, actor and time.
pub fn event_line(action: &str, actor: &str, time_nano: i64) -> String {
    format!(
        r#"{{"Type":"container","Action":"{action}","Actor":{{"ID":"{actor}","Attributes":{{"name":"{actor}"}}}},"scope":"local","time":{},"timeNano":{time_nano}}}"#,
        time_nano / 1_000_000_000
    )
}

/// What the server saw of one request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path and query as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The body, when the request said its `Content-Length`.
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// A query parameter, percent-decoded.
    pub fn query(&self, key: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then(|| percent_decode(v))
        })
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// One accepted connection, its request already read.
pub struct Conn {
    pub stream: TcpStream,
    pub request: Request,
    /// 0 for the first connection the server accepted, 1 for the next, ...
    pub index: usize,
}

impl Conn {
    /// Writes a status line and headers for a chunked body.
    pub fn start_chunked(&mut self, content_type: &str) {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let _ = self.stream.write_all(head.as_bytes());
    }

    /// Writes one chunk.
    pub fn chunk(&mut self, bytes: &[u8]) {
        let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
        let _ = self.stream.write_all(&out);
    }

    /// Writes the last chunk: the body ends cleanly.
    pub fn end_chunked(&mut self) {
        let _ = self.stream.write_all(b"0\r\n\r\n");
    }

    /// A complete response with a fixed body.
    pub fn respond(&mut self, status: u16, content_type: &str, body: &str) {
        let head = format!(
            "HTTP/1.1 {status} Status\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = self.stream.write_all(head.as_bytes());
    }

    /// Waits until the client closes the connection (or the server stops).
    pub fn hold(&mut self) {
        let mut sink = [0u8; 64];
        while matches!(self.stream.read(&mut sink), Ok(n) if n > 0) {}
    }

    /// Acts as a forward proxy for a `CONNECT host:port` request: connects
    /// to the target, says so, and copies bytes both ways until either side
    /// closes.
    pub fn tunnel(&mut self) {
        assert_eq!(self.request.method, "CONNECT", "{:?}", self.request);
        let Ok(upstream) = TcpStream::connect(&self.request.target) else {
            let _ = self.stream.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
            return;
        };
        let _ = self
            .stream
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
        let client = &self.stream;
        thread::scope(|scope| {
            scope.spawn(|| {
                let _ = std::io::copy(&mut &*client, &mut &upstream);
                let _ = upstream.shutdown(Shutdown::Both);
            });
            let _ = std::io::copy(&mut &upstream, &mut &*client);
            let _ = client.shutdown(Shutdown::Both);
        });
    }
}

type Handler = dyn Fn(&mut Conn) + Send + Sync + 'static;

/// An HTTP/1.1 server on a loopback port; each connection runs `handler` on a
/// thread of its own. Dropping the server closes every connection and joins
/// every thread.
pub struct TestServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stopping: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TestServer {
    pub fn start(handler: impl Fn(&mut Conn) + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stopping = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let workers = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let acceptor = {
            let (requests, stopping, sockets, workers) = (
                requests.clone(),
                stopping.clone(),
                sockets.clone(),
                workers.clone(),
            );
            let counter = AtomicUsize::new(0);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    sockets.lock().push(stream.try_clone().unwrap());
                    let index = counter.fetch_add(1, Ordering::SeqCst);
                    let (requests, handler) = (requests.clone(), handler.clone());
                    let worker = thread::spawn(move || {
                        let Some(request) = read_request(&stream) else {
                            return;
                        };
                        requests.lock().push(request.clone());
                        let mut conn = Conn {
                            stream,
                            request,
                            index,
                        };
                        handler(&mut conn);
                    });
                    workers.lock().push(worker);
                }
            })
        };
        TestServer {
            addr,
            requests,
            stopping,
            sockets,
            acceptor: Some(acceptor),
            workers,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for socket in self.sockets.lock().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        let workers: Vec<_> = self.workers.lock().drain(..).collect();
        for worker in workers {
            let _ = worker.join();
        }
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

/// A fake Portainer: `/api/endpoints` answers `endpoints`, every other path
/// runs `stream`.
pub fn portainer(
    endpoints: &'static str,
    stream: impl Fn(&mut Conn) + Send + Sync + 'static,
) -> TestServer {
    TestServer::start(move |conn| {
        if conn.request.path() == "/api/endpoints" {
            conn.respond(200, "application/json", endpoints);
        } else {
            stream(conn);
        }
    })
}

/// Polls `check` until it holds or `timeout` passes; panics with `what` then.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// The generous bound the tests use for anything that should be quick.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Stops `listener` and checks that it took less than 5 s (it should take
/// milliseconds: every idle read is unblocked).
pub fn stop_promptly(listener: &portainer::Listener) {
    let started = Instant::now();
    listener.stop();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
}

/// Log lines captured by [`capture_logs`], as `LEVEL target: message`.
static LOG_LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        if record.target().starts_with("portainer") {
            LOG_LINES.lock().push(format!(
                "{} {}: {}",
                record.level(),
                record.target(),
                record.args()
            ));
        }
    }

    fn flush(&self) {}
}

/// Installs a logger that keeps this crate's log lines for [`logged`].
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&CaptureLogger).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// The captured log lines that contain `needle`.
pub fn logged(needle: &str) -> Vec<String> {
    LOG_LINES
        .lock()
        .iter()
        .filter(|line| line.contains(needle))
        .cloned()
        .collect()
}

/// Every captured log line.
pub fn all_logs() -> Vec<String> {
    LOG_LINES.lock().clone()
}
