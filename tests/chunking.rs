//! Property: however the bytes of a stream are cut into reads, the same
//! events come out.

mod common;

use std::io::{self, Read};

use portainer::{DockerEvent, EventStream};
use proptest::prelude::*;

/// Hands out `bytes` in pieces of the given sizes, then the rest.
struct Pieces {
    bytes: Vec<u8>,
    sizes: Vec<usize>,
    at: usize,
}

impl Read for Pieces {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.bytes.len() {
            return Ok(0);
        }
        let size = if self.sizes.is_empty() {
            self.bytes.len()
        } else {
            self.sizes.remove(0)
        };
        let n = size.min(out.len()).min(self.bytes.len() - self.at);
        out[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn fixture_stream(crlf: bool) -> Vec<u8> {
    let ending = if crlf { "\r\n" } else { "\n" };
    common::fixtures::fixture_lines()
        .iter()
        .map(|line| format!("{line}{ending}"))
        .collect::<String>()
        .into_bytes()
}

fn expected() -> Vec<DockerEvent> {
    common::fixtures::fixture_lines()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_read_boundaries_give_the_fixture_events(
        sizes in proptest::collection::vec(1usize..700, 0..200),
        crlf in any::<bool>(),
    ) {
        let reader = Pieces { bytes: fixture_stream(crlf), sizes, at: 0 };
        let events: Vec<DockerEvent> = EventStream::from_reader(reader, 64 * 1024)
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(events, expected());
    }
}
