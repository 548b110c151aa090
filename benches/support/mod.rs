//! What the benchmarks share: realistic event bytes, a loopback server that
//! streams them the way dockerd (or a proxy) frames them, the raw-socket
//! reader that sets the limit, and reading criterion's own results back to
//! print ratios measured in the same run.

#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;

#[path = "../../tests/common/fixtures.rs"]
mod fixtures;

pub use self::fixtures::fixture_lines;

/// `count` events in the fixture's proportions of types and actions, each
/// with its own time, about 500 bytes each (a compose project's labels, as
/// most containers carry).
pub fn generated_lines(count: usize) -> Vec<String> {
    let fixture: Vec<serde_json::Value> = fixture_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (0..count)
        .map(|i| {
            let mut event = fixture[i % fixture.len()].clone();
            let time_nano = 1_796_300_000_000_000_000i64 + i as i64 * 1_000;
            event["time"] = (time_nano / 1_000_000_000).into();
            event["timeNano"] = time_nano.into();
            if let Some(attributes) = event
                .get_mut("Actor")
                .and_then(|a| a.get_mut("Attributes"))
                .and_then(|a| a.as_object_mut())
            {
                attributes.insert("com.docker.compose.project".into(), "shop".into());
                attributes.insert(
                    "com.docker.compose.service".into(),
                    format!("web{}", i % 7).into(),
                );
                attributes.insert("seq".into(), i.to_string().into());
            }
            serde_json::to_string(&event).unwrap()
        })
        .collect()
}

/// The borrowed shape the limit parses into: no copies of the strings.
#[derive(Deserialize)]
pub struct BorrowedEvent<'a> {
    #[serde(rename = "Type", borrow)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(rename = "Action", borrow)]
    pub action: Option<Cow<'a, str>>,
    #[serde(rename = "Actor", borrow)]
    pub actor: Option<BorrowedActor<'a>>,
    #[serde(borrow)]
    pub scope: Option<Cow<'a, str>>,
    pub time: Option<i64>,
    #[serde(rename = "timeNano")]
    pub time_nano: Option<i64>,
    #[serde(borrow)]
    pub status: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub from: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub struct BorrowedActor<'a> {
    #[serde(rename = "ID", borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(rename = "Attributes", borrow)]
    pub attributes: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
}

/// How the server cuts the body into HTTP chunks.
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    /// One chunk per event, the newline inside, as dockerd sends them.
    PerEvent,
    /// 32 KiB chunks cut anywhere, as a buffering proxy sends them.
    Proxy32K,
}

/// The whole HTTP response for `lines`, framed as asked, ending the body.
pub fn response_bytes(lines: &[String], framing: Framing, end: bool) -> Vec<u8> {
    let mut out =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    let chunk = |bytes: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(format!("{:x}\r\n", bytes.len()).as_bytes());
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    };
    match framing {
        Framing::PerEvent => {
            for line in lines {
                chunk(format!("{line}\n").as_bytes(), &mut out);
            }
        }
        Framing::Proxy32K => {
            let body: Vec<u8> = lines
                .iter()
                .flat_map(|l| format!("{l}\n").into_bytes())
                .collect();
            for piece in body.chunks(32 * 1024) {
                chunk(piece, &mut out);
            }
        }
    }
    if end {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    out
}

/// A loopback server that answers every connection with the same bytes,
/// then closes it (or, with `hold`, keeps it open until the client does).
/// `/api/endpoints` gets `endpoints` instead.
pub struct Server {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    /// The connections still open, by number, to shut down on drop.
    sockets: Arc<Mutex<BTreeMap<u64, TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(response: Vec<u8>, endpoints: String, hold: bool) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stopping = Arc::new(AtomicBool::new(false));
        let sockets = Arc::new(Mutex::new(BTreeMap::new()));
        let response = Arc::new(response);
        let acceptor = {
            let (stopping, sockets) = (stopping.clone(), sockets.clone());
            thread::spawn(move || {
                for (number, stream) in (0u64..).zip(listener.incoming()) {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    sockets.lock().insert(number, stream.try_clone().unwrap());
                    let (response, endpoints) = (response.clone(), endpoints.clone());
                    let open = sockets.clone();
                    thread::Builder::new()
                        .stack_size(64 * 1024)
                        .spawn(move || {
                            serve(&mut stream, &response, &endpoints, hold);
                            open.lock().remove(&number);
                        })
                        .unwrap();
                }
            })
        };
        Server {
            addr,
            stopping,
            sockets,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for socket in std::mem::take(&mut *self.sockets.lock()).into_values() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// Answers one connection: the endpoint list, or the stream's bytes (and,
/// with `hold`, nothing more until the client closes).
fn serve(stream: &mut TcpStream, response: &[u8], endpoints: &str, hold: bool) {
    let head = read_head(stream);
    if head.starts_with("GET /api/endpoints ") {
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{endpoints}",
            endpoints.len()
        );
        let _ = stream.write_all(reply.as_bytes());
        return;
    }
    let _ = stream.write_all(response);
    if hold {
        let mut sink = [0u8; 16];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    }
}

/// Reads a request head up to its blank line.
pub fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The limit: a plain socket, a minimal chunked decoder, a newline split and
/// a borrowed parse, with nothing else. Returns how many events it parsed.
pub fn raw_read_events(addr: SocketAddr) -> io::Result<usize> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(b"GET /api/endpoints/1/docker/events HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut input = vec![0u8; 64 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    let mut body: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut body_start = 0;
    let mut count = 0;
    let mut head_done = false;
    // Bytes of the current chunk still to come; None while reading a size line.
    let mut chunk_left: Option<usize> = None;
    loop {
        if start == end {
            start = 0;
            end = 0;
        }
        if end == input.len() {
            input.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        let n = stream.read(&mut input[end..])?;
        if n == 0 {
            return Ok(count);
        }
        end += n;
        if !head_done {
            match memchr::memmem::find(&input[start..end], b"\r\n\r\n") {
                Some(pos) => {
                    start += pos + 4;
                    head_done = true;
                }
                None => continue,
            }
        }
        loop {
            match chunk_left {
                None => {
                    let Some(pos) = memchr::memchr(b'\n', &input[start..end]) else {
                        break;
                    };
                    let line = std::str::from_utf8(&input[start..start + pos])
                        .unwrap()
                        .trim();
                    start += pos + 1;
                    if line.is_empty() {
                        continue;
                    }
                    let size = usize::from_str_radix(line, 16).unwrap();
                    if size == 0 {
                        return Ok(count);
                    }
                    chunk_left = Some(size);
                }
                Some(left) => {
                    let take = left.min(end - start);
                    if take == 0 {
                        break;
                    }
                    body.extend_from_slice(&input[start..start + take]);
                    start += take;
                    chunk_left = if left == take {
                        None
                    } else {
                        Some(left - take)
                    };
                    while let Some(pos) = memchr::memchr(b'\n', &body[body_start..]) {
                        let line = &body[body_start..body_start + pos];
                        if !line.is_empty() {
                            let event: BorrowedEvent = serde_json::from_slice(line).unwrap();
                            std::hint::black_box(&event);
                            count += 1;
                        }
                        body_start += pos + 1;
                    }
                    // Forget consumed lines now and then, not after every chunk.
                    if body_start == body.len() {
                        body.clear();
                        body_start = 0;
                    } else if body_start > 32 * 1024 {
                        body.drain(..body_start);
                        body_start = 0;
                    }
                }
            }
        }
    }
}

/// Criterion's mean time per iteration for `group/bench`, in nanoseconds,
/// from the run that just finished.
pub fn measured_ns(group: &str, bench: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")));
    let path = target
        .join("criterion")
        .join(group.replace('/', "_"))
        .join(bench.replace('/', "_"))
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

/// Prints events per second of `ours` and `limit` (both `events` events per
/// iteration) and their ratio, all from this run.
pub fn report_ratio(group: &str, ours: &str, limit: &str, events: u64) {
    match (measured_ns(group, ours), measured_ns(group, limit)) {
        (Some(ours_ns), Some(limit_ns)) => {
            let rate = |ns: f64| events as f64 / (ns / 1e9);
            println!(
                "{group}: {ours} {:.0} events/s, {limit} {:.0} events/s, ratio {:.1}%",
                rate(ours_ns),
                rate(limit_ns),
                100.0 * limit_ns / ours_ns
            );
        }
        _ => println!("{group}: no estimates to compare (filtered out?)"),
    }
}

/// How long `work` takes.
pub fn timed(work: impl FnOnce()) -> Duration {
    let started = Instant::now();
    work();
    started.elapsed()
}

/// Times `ours` and `limit` in alternation, `pairs` times each (which of the
/// two goes first changes every pair), and prints the median of the ratios
/// of the pairs with the range of their middle half. Load that comes and
/// goes on the machine slows both runs of a pair alike, so this ratio holds
/// steadier than one taken between two estimates made seconds apart.
/// Nothing runs when criterion's filter left the group out.
pub fn report_paired(
    group: &str,
    ours_name: &str,
    pairs: usize,
    mut ours: impl FnMut() -> Duration,
    mut limit: impl FnMut() -> Duration,
) {
    if measured_ns(group, ours_name).is_none() {
        return;
    }
    let mut ratios: Vec<f64> = (0..pairs)
        .map(|pair| {
            let (ours_time, limit_time) = if pair % 2 == 0 {
                let ours_time = ours();
                (ours_time, limit())
            } else {
                let limit_time = limit();
                (ours(), limit_time)
            };
            limit_time.as_secs_f64() / ours_time.as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let percent =
        |quantile: f64| 100.0 * ratios[((ratios.len() - 1) as f64 * quantile).round() as usize];
    println!(
        "{group}: paired ratio {:.1}% (middle half {:.1}-{:.1}%, {pairs} pairs)",
        percent(0.5),
        percent(0.25),
        percent(0.75)
    );
}
