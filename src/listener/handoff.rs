//! How a reader passes events to the dispatcher: in batches, each handed
//! over just before the reader would wait for the network, or when it is full.
//!
//! Waking the dispatcher costs a system call and, when it sleeps on another
//! core, an interrupt to that core: far more than parsing an event. So a
//! reader that finds more bytes already on the socket keeps parsing and holds
//! its events back; the batch goes out the moment the socket is drained.
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

/// The most events handed to the dispatcher at once. Under load an event
/// waits at most for this many to be parsed after it (about half a
/// millisecond here) before it is handed over.
pub(super) const MAX_BATCH: usize = 128;

/// One reader's events on their way to the dispatcher.
pub(super) struct Handoff {
    endpoint_id: u64,
    batch: Packed,
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

    /// Keeps the newest event, handing the batch over once it is full.
    pub(super) fn keep_newest(&mut self) {
        if self.batch.len() >= MAX_BATCH {
            self.flush();
        }
    }

    /// Queues the batch for the dispatcher, dropping (and counting) the
    /// events that do not fit in the queue's capacity.
    pub(super) fn flush(&mut self) {
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
