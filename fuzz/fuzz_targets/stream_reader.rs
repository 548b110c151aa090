//! Feeds arbitrary bytes, cut into arbitrary reads, to the event stream
//! reader: it must never panic, hang or hold more than about one line.

#![no_main]

use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use portainer::EventStream;

/// Hands out the input in reads whose sizes come from the input itself.
struct Cuts {
    data: Vec<u8>,
    at: usize,
    seed: u8,
}

impl Read for Cuts {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.data.len() {
            return Ok(0);
        }
        self.seed = self.seed.wrapping_mul(31).wrapping_add(7);
        let size = usize::from(self.seed % 64) + 1;
        let n = size.min(out.len()).min(self.data.len() - self.at);
        out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let reader = Cuts {
        data: rest.to_vec(),
        at: 0,
        seed,
    };
    // A small limit so overlong lines are exercised too.
    for event in EventStream::from_reader(reader, 256).flatten() {
        // Every accessor must cope with whatever the event holds.
        let _ = (event.action_name(), event.action_detail(), event.actor_id());
        let _ = event.timestamp_nanos();
    }
});
