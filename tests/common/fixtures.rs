//! The real daemon output the tests and benchmarks read. Also included by
//! `benches/support` (by path), so both read it the same way.

/// The fixture of real daemon output, one event per line.
pub fn fixture_lines() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dockerd-20.10-events.jsonl"
    );
    std::fs::read_to_string(path)
        .expect("fixture present")
        .lines()
        .map(str::to_string)
        .collect()
}
