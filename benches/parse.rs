//! Scenario **parse**: turning event lines into `DockerEvent`s, beside the
//! limit for serde_json on this machine, a parse into borrowed `Cow` fields
//! that copies nothing. Inputs: the 43 lines of real daemon output in
//! `tests/fixtures/`, and 10,000 generated lines in the same proportions
//! (about 500 bytes each). Prints events/s of both and the ratio of
//! criterion's estimates, then the median ratio of alternating runs.

mod support;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portainer::DockerEvent;
use support::{BorrowedEvent, fixture_lines, generated_lines, report_paired, report_ratio, timed};

/// Alternating runs of both parses for the paired ratio.
const PAIRS: usize = 40;

fn parse(c: &mut Criterion) {
    for (name, lines) in [
        ("parse/fixture", fixture_lines()),
        ("parse/generated", generated_lines(10_000)),
    ] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(lines.len() as u64));
        let ours = || {
            for line in &lines {
                std::hint::black_box(DockerEvent::from_json(line.as_bytes()).unwrap());
            }
        };
        let limit = || {
            for line in &lines {
                let event: BorrowedEvent = serde_json::from_slice(line.as_bytes()).unwrap();
                std::hint::black_box(event);
            }
        };
        group.bench_function("DockerEvent", |b| b.iter(ours));
        group.bench_function("borrowed limit", |b| b.iter(limit));
        group.finish();
        report_ratio(name, "DockerEvent", "borrowed limit", lines.len() as u64);
        // Each timed run parses about 10,000 lines, whichever the input.
        let rounds = 10_000usize.div_ceil(lines.len());
        report_paired(
            name,
            "DockerEvent",
            PAIRS,
            || timed(|| (0..rounds).for_each(|_| ours())),
            || timed(|| (0..rounds).for_each(|_| limit())),
        );
    }
}

criterion_group!(benches, parse);
criterion_main!(benches);
