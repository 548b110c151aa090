//! Scenario **latency**: the time from the server's write of an event to the
//! callback that receives it, at a low steady rate (one event per
//! millisecond, 3,000 events, one chunk each as dockerd sends them). Prints
//! p50, p99 and the maximum. A plain program rather than a criterion bench:
//! percentiles of single events are the figure, not a mean per iteration.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use portainer::{Client, Listener};
use support::{generated_lines, read_head};

const EVENTS: usize = 3_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let lines = generated_lines(EVENTS);
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; EVENTS]));
    let listener_socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener_socket.local_addr().unwrap());
    let server = {
        let sent = sent.clone();
        thread::spawn(move || {
            let (mut stream, _) = listener_socket.accept().unwrap();
            read_head(&mut stream);
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap();
            let start = Instant::now();
            for (i, line) in lines.iter().enumerate() {
                // A steady rate: event i leaves at i ms.
                let due = start + Duration::from_millis(i as u64);
                while Instant::now() < due {
                    thread::sleep(due - Instant::now());
                }
                let chunk = format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
                sent.lock()[i] = Some(Instant::now());
                stream.write_all(chunk.as_bytes()).unwrap();
            }
            stream
        })
    };

    let latencies = Arc::new(Mutex::new(Vec::with_capacity(EVENTS)));
    let listener = Listener::builder(Client::new(&url, "bench").unwrap())
        .endpoint(1)
        .build();
    {
        let (sent, latencies) = (sent.clone(), latencies.clone());
        listener.register_callback(move |result| {
            let received = Instant::now();
            let seq: usize = result.event.attribute("seq").unwrap().parse().unwrap();
            let sent_at = sent.lock()[seq].expect("sent before received");
            latencies.lock().push(received - sent_at);
        });
    }
    listener.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while latencies.lock().len() < EVENTS {
        assert!(Instant::now() < deadline, "events went missing");
        thread::sleep(Duration::from_millis(10));
    }
    listener.stop();
    drop(server.join().unwrap());

    let mut all = latencies.lock().clone();
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    println!(
        "latency: {} events at 1/ms, write to callback: p50 {:?}, p99 {:?}, max {:?}",
        all.len(),
        at(0.50),
        at(0.99),
        all[all.len() - 1]
    );
}
