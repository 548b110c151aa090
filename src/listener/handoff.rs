//! How a reader passes events to the dispatcher: in batches, each handed
//! over just before the reader would wait for the network, when it is full,
//! or when more input keeps coming but no more events.
//!
//! Waking the dispatcher costs a system call and, when it sleeps on another
//! core, an interrupt to that core: far more than parsing an event. So a
//! reader that finds more bytes already on the socket keeps parsing and holds
//! its events back; the batch goes out the moment the socket is drained, or
//! after a few reads that brought no event to keep, lest input that is not
//! events (a flood of malformed lines) hold it back for as long as it lasts.
//! Under load that means one wake-up per [`MAX_BATCH`] events, and at a low
//! rate each event goes out alone, as soon as it is parsed.
//!
//! A batch holds its events packed ([`Packed`]), not yet made into
//! [`DockerEvent`](crate::DockerEvent)s: the dispatcher makes them. Its
//! buffers go back to a pool the readers draw from, so under load no thread
//! allocates per batch either.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender};

use super::status::Tracker;
use crate::error::Error;
use crate::event::{EventKey, Packed};
use crate::transport::ReadAhead;

/// Events of one endpoint, as they travel from its reader to the dispatcher.
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) endpoint_id: u64,
    pub(super) events: Packed,
}

/// How many emptied batches wait in the pool for a reader to fill them.
pub(super) const POOLED: usize = 8;

/// A batch whose buffers grew past this (a burst of very long lines) is
/// freed rather than pooled.
pub(super) const POOLED_BYTES: usize = 256 * 1024;

/// The most events handed to the dispatcher at once. Under a flood an event
/// waits for at most this many to be parsed after it (about 0.3 ms on the
/// benchmark machine) before it is handed over; a larger batch would save
/// little, as one wake-up per 128 events costs the reader a few per cent.
pub(super) const MAX_BATCH: usize = 128;

/// The most socket reads a held batch waits through without a new event
/// being kept. Input that brings no events (malformed lines, a line too long
/// to keep, replays being dropped) can keep the socket from ever draining;
/// the events held before it must not wait for it to end.
pub(super) const MAX_IDLE_READS: u32 = 4;

/// One reader's events on their way to the dispatcher.
pub(super) struct Handoff {
    endpoint_id: u64,
    batch: Packed,
    /// Socket reads since the newest event was kept, while a batch is held.
    idle_reads: u32,
    events: Sender<Batch>,
    /// Emptied batches the dispatcher gave back.
    pool: Receiver<Packed>,
    /// Events handed to the dispatcher and not yet delivered, all readers'.
    queued: Arc<AtomicUsize>,
    /// The most events `queued` may reach; the rest are dropped and counted.
    capacity: usize,
    status: Arc<Tracker>,
}

impl Handoff {
    pub(super) fn new(
        endpoint_id: u64,
        events: Sender<Batch>,
        pool: Receiver<Packed>,
        queued: Arc<AtomicUsize>,
        capacity: usize,
        status: Arc<Tracker>,
    ) -> Self {
        Handoff {
            endpoint_id,
            batch: Packed::default(),
            idle_reads: 0,
            events,
            pool,
            queued,
            capacity,
            status,
        }
    }

    /// Parses one line into the batch. A line that is not an event leaves
    /// the batch as it was.
    pub(super) fn parse(&mut self, line: &[u8]) -> Result<(), Error> {
        if self.batch.is_unallocated() {
            if let Ok(spare) = self.pool.try_recv() {
                self.batch = spare;
            }
        }
        self.batch.push_json(line)
    }

    /// The newest event of the batch, the one `parse` just added.
    pub(super) fn newest(&self) -> EventKey<'_> {
        self.batch.key(self.batch.len() - 1)
    }

    /// Takes back the newest event: it is not to be delivered.
    pub(super) fn discard_newest(&mut self) {
        self.batch.truncate(self.batch.len() - 1);
    }

    /// Keeps the newest event, handing the batch over once it is full: at
    /// [`MAX_BATCH`] events, or at the queue's capacity when that is smaller,
    /// so that a burst larger than a small queue is not cut to the queue's
    /// size while the dispatcher could have taken it in parts.
    pub(super) fn keep_newest(&mut self) {
        self.idle_reads = 0;
        if self.batch.len() >= MAX_BATCH.min(self.capacity) {
            self.flush();
        }
    }

    /// Called before each socket read: hands the batch over if the read
    /// would wait for the network, or if input has kept coming for
    /// [`MAX_IDLE_READS`] reads without another event to keep.
    pub(super) fn before_read(&mut self, read: &ReadAhead<'_>) {
        if self.batch.len() == 0 {
            return;
        }
        self.idle_reads += 1;
        if self.idle_reads > MAX_IDLE_READS || read.would_wait() {
            self.flush();
        }
    }

    /// Queues the batch for the dispatcher, dropping (and counting) the
    /// events that do not fit in the queue's capacity.
    pub(super) fn flush(&mut self) {
        self.idle_reads = 0;
        let count = self.batch.len();
        if count == 0 {
            return;
        }
        let before = self.queued.fetch_add(count, Ordering::AcqRel);
        let room = self.capacity.saturating_sub(before).min(count);
        if room < count {
            self.queued.fetch_sub(count - room, Ordering::AcqRel);
            self.batch.truncate(room);
            let dropped = (count - room) as u64;
            let total = self.status.dropped.fetch_add(dropped, Ordering::Relaxed) + dropped;
            if total == dropped {
                log::warn!(
                    "endpoint {}: the dispatcher's queue is full (callbacks too slow); \
                     dropping events, counted in the status",
                    self.endpoint_id
                );
            }
            if room == 0 {
                return;
            }
        }
        let batch = Batch {
            endpoint_id: self.endpoint_id,
            events: std::mem::take(&mut self.batch),
        };
        match self.events.send(batch) {
            Ok(()) => {
                self.status
                    .delivered
                    .fetch_add(room as u64, Ordering::Relaxed);
            }
            // The dispatcher is gone, so the listener is stopping.
            Err(_) => {
                self.queued.fetch_sub(room, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: usize) -> Vec<u8> {
        format!(
            r#"{{"Type":"container","Action":"start","Actor":{{"ID":"c{seq}"}},"timeNano":{seq}}}"#
        )
        .into_bytes()
    }

    fn handoff(capacity: usize) -> (Handoff, Receiver<Batch>, Arc<Tracker>) {
        let (handoff, batches, status, _) = handoff_and_queue(capacity);
        (handoff, batches, status)
    }

    /// Also the count of queued events, which the dispatcher would lower.
    fn handoff_and_queue(
        capacity: usize,
    ) -> (Handoff, Receiver<Batch>, Arc<Tracker>, Arc<AtomicUsize>) {
        let (events, batches) = crossbeam_channel::unbounded();
        let (_, pool) = crossbeam_channel::bounded(POOLED);
        let status = Arc::new(Tracker::new(7));
        let queued = Arc::new(AtomicUsize::new(0));
        let handoff = Handoff::new(7, events, pool, queued.clone(), capacity, status.clone());
        (handoff, batches, status, queued)
    }

    #[test]
    fn a_burst_larger_than_a_small_queue_goes_out_in_parts_the_queue_takes() {
        let (mut handoff, batches, status, queued) = handoff_and_queue(5);
        for seq in 0..8 {
            handoff.parse(&line(seq)).unwrap();
            handoff.keep_newest();
            if let Ok(batch) = batches.try_recv() {
                assert_eq!(actors(&batch), ["c0", "c1", "c2", "c3", "c4"]);
                // The dispatcher delivers them.
                queued.fetch_sub(batch.events.len(), Ordering::AcqRel);
            }
        }
        handoff.flush();
        assert_eq!(actors(&batches.try_recv().unwrap()), ["c5", "c6", "c7"]);
        assert_eq!(status.dropped.load(Ordering::Relaxed), 0);
    }

    fn actors(batch: &Batch) -> Vec<String> {
        (0..batch.events.len())
            .map(|index| batch.events.key(index).actor.unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_flood_goes_out_in_full_batches_and_the_rest_on_flush() {
        let (mut handoff, batches, status) = handoff(1_000);
        for seq in 0..300 {
            handoff.parse(&line(seq)).unwrap();
            handoff.keep_newest();
        }
        let sizes: Vec<usize> = batches.try_iter().map(|b| b.events.len()).collect();
        assert_eq!(sizes, [MAX_BATCH, MAX_BATCH]);
        handoff.flush();
        let last = batches.try_recv().unwrap();
        assert_eq!(
            (last.endpoint_id, last.events.len()),
            (7, 300 - 2 * MAX_BATCH)
        );
        assert_eq!(actors(&last).last().map(String::as_str), Some("c299"));
        assert_eq!(status.delivered.load(Ordering::Relaxed), 300);
    }

    #[test]
    fn a_discarded_event_never_leaves() {
        let (mut handoff, batches, _) = handoff(1_000);
        for seq in 0..3 {
            handoff.parse(&line(seq)).unwrap();
            if seq == 1 {
                handoff.discard_newest();
            } else {
                handoff.keep_newest();
            }
        }
        handoff.flush();
        assert_eq!(actors(&batches.try_recv().unwrap()), ["c0", "c2"]);
    }

    #[test]
    fn past_the_queue_capacity_events_are_dropped_and_counted() {
        let (mut handoff, batches, status) = handoff(5);
        for seq in 0..8 {
            handoff.parse(&line(seq)).unwrap();
        }
        handoff.flush();
        assert_eq!(
            actors(&batches.try_recv().unwrap()),
            ["c0", "c1", "c2", "c3", "c4"]
        );
        assert_eq!(status.dropped.load(Ordering::Relaxed), 3);
        handoff.parse(&line(8)).unwrap();
        handoff.flush();
        assert!(batches.try_recv().is_err(), "the queue is still full");
        assert_eq!(status.dropped.load(Ordering::Relaxed), 4);
    }
}
