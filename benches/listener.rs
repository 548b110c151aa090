//! Scenario **listener**: the same loopback stream of 20,000 realistic events
//! behind a `Listener`, with one callback and one subscriber counting them.
//! An iteration runs from `start()` until both have seen every event. The
//! raw-socket limit is measured beside it in the same run. Prints events/s
//! and the ratio for both framings, then the median ratio of alternating runs.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portainer::{Client, Listener};
use support::{
    Framing, Server, generated_lines, raw_read_events, report_paired, report_ratio, timed,
};

const EVENTS: usize = 20_000;

/// Alternating runs of the listener and the limit for the paired ratio.
const PAIRS: usize = 40;

/// Runs one listener over the whole stream; returns the time it took. This
/// thread is the subscriber; the callback signals when it has seen the last
/// event. Nothing spins, so the listener has both cores.
fn run_listener(url: &str) -> Duration {
    let listener = Listener::builder(Client::new(url, "bench").unwrap())
        .endpoint(1)
        .build();
    let called = Arc::new(AtomicUsize::new(0));
    let (done, finished) = crossbeam_channel::bounded(1);
    let counter = called.clone();
    listener.register_callback(move |_| {
        if counter.fetch_add(1, Ordering::Relaxed) + 1 == EVENTS {
            let _ = done.send(());
        }
    });
    let events = listener.subscribe();
    let started = Instant::now();
    listener.start().unwrap();
    assert_eq!(events.iter().take(EVENTS).count(), EVENTS);
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the callback saw every event");
    let took = started.elapsed();
    listener.stop();
    took
}

fn listener(c: &mut Criterion) {
    let lines = generated_lines(EVENTS);
    for (name, framing) in [
        ("listener/per-event", Framing::PerEvent),
        ("listener/proxy-32k", Framing::Proxy32K),
    ] {
        // The listener's stream stays open after the last event, as a live
        // daemon's does; the raw reader gets a body that ends.
        let held = Server::start(
            support::response_bytes(&lines, framing, false),
            "[]".into(),
            true,
        );
        let ended = Server::start(
            support::response_bytes(&lines, framing, true),
            "[]".into(),
            false,
        );
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(EVENTS as u64));
        group.sample_size(20);
        group.bench_function("listener", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run_listener(&held.url())).sum())
        });
        group.bench_function("raw limit", |b| {
            b.iter(|| assert_eq!(raw_read_events(ended.addr()).unwrap(), EVENTS))
        });
        group.finish();
        report_ratio(name, "listener", "raw limit", EVENTS as u64);
        report_paired(
            name,
            "listener",
            PAIRS,
            || run_listener(&held.url()),
            || timed(|| assert_eq!(raw_read_events(ended.addr()).unwrap(), EVENTS)),
        );
    }
}

criterion_group!(benches, listener);
criterion_main!(benches);
