//! Scenario **stream**: a loopback server streams 20,000 realistic events to
//! `Client::events()`, framed one chunk per event as dockerd sends them, and
//! in 32 KiB chunks cut mid-line as a buffering proxy does. Beside it, in
//! the same run, the limit: a raw socket reader with a minimal chunked
//! decoder parsing into borrowed `Cow` fields. Prints events/s and the ratio
//! of criterion's estimates, then the median ratio of alternating runs.

mod support;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portainer::{Client, EventQuery};
use support::{
    Framing, Server, generated_lines, raw_read_events, report_paired, report_ratio, timed,
};

const EVENTS: usize = 20_000;

/// Alternating runs of `events()` and the limit for the paired ratio.
const PAIRS: usize = 40;

fn stream(c: &mut Criterion) {
    let lines = generated_lines(EVENTS);
    for (name, framing) in [
        ("stream/per-event", Framing::PerEvent),
        ("stream/proxy-32k", Framing::Proxy32K),
    ] {
        let server = Server::start(
            support::response_bytes(&lines, framing, true),
            "[]".into(),
            false,
        );
        let client = Client::new(&server.url(), "bench").unwrap();
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(EVENTS as u64));
        group.sample_size(20);
        let read_all = || {
            let mut count = 0;
            for event in client.events(1, &EventQuery::new()).unwrap() {
                std::hint::black_box(event.unwrap());
                count += 1;
            }
            assert_eq!(count, EVENTS);
        };
        let read_raw = || assert_eq!(raw_read_events(server.addr()).unwrap(), EVENTS);
        group.bench_function("events()", |b| b.iter(read_all));
        group.bench_function("raw limit", |b| b.iter(read_raw));
        group.finish();
        report_ratio(name, "events()", "raw limit", EVENTS as u64);
        report_paired(
            name,
            "events()",
            PAIRS,
            || timed(read_all),
            || timed(read_raw),
        );
    }
}

criterion_group!(benches, stream);
criterion_main!(benches);
