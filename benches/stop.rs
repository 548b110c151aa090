//! Scenario **stop**: the wall time of `Listener::stop()` with 1 and with 100
//! endpoints idle in a read (streams open, no events), and with 100
//! endpoints waiting to reconnect (the server answers 502; the interval is
//! an hour).

mod support;

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use portainer::{Client, Listener, StreamState};
use support::Server;

fn endpoint_list(count: usize) -> String {
    let items: Vec<String> = (1..=count)
        .map(|id| format!(r#"{{"Id":{id},"Name":"e{id}","Type":1}}"#))
        .collect();
    format!("[{}]", items.join(","))
}

/// Starts a listener on every endpoint, waits until all are in `ready`, and
/// times `stop()`.
fn time_stop(url: &str, ready: fn(&StreamState) -> bool) -> Duration {
    let listener = Listener::builder(Client::new(url, "bench").unwrap())
        .reconnect_interval(Duration::from_secs(3600))
        .build();
    listener.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !listener.status().iter().all(|s| ready(&s.state)) {
        assert!(Instant::now() < deadline, "endpoints never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    listener.stop();
    started.elapsed()
}

fn stop(c: &mut Criterion) {
    let idle_head =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    let failing =
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec();
    let mut group = c.benchmark_group("stop");
    // Criterion counts only the time of `stop()`, not the set-up around it
    // (starting up to 100 streams), so a short measurement still takes long.
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(2));
    for (name, count, response, hold, ready) in [
        (
            "1 idle",
            1,
            &idle_head,
            true,
            (|s: &StreamState| *s == StreamState::Streaming) as fn(&StreamState) -> bool,
        ),
        ("100 idle", 100, &idle_head, true, |s: &StreamState| {
            *s == StreamState::Streaming
        }),
        ("100 waiting", 100, &failing, false, |s: &StreamState| {
            matches!(s, StreamState::Waiting { .. })
        }),
    ] {
        let server = Server::start(response.clone(), endpoint_list(count), hold);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| time_stop(&server.url(), ready)).sum())
        });
    }
    group.finish();
}

criterion_group!(benches, stop);
criterion_main!(benches);
