//! What a program can read about each endpoint the listener follows.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::query::Timestamp;

/// Where the listener's connection to one endpoint stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamState {
    /// Opening the event stream.
    Connecting,
    /// The stream is open; events arrive as they happen.
    Streaming,
    /// The last attempt failed or the stream ended; the next attempt starts
    /// at `until`.
    Waiting {
        /// When the next attempt starts.
        until: SystemTime,
        /// Why the last attempt ended.
        reason: String,
    },
    /// The requested window (`until`) is complete.
    Finished,
    /// The endpoint ended for good: the key was refused (401), access was
    /// forbidden (403), or the endpoint does not exist (404).
    Failed {
        /// The HTTP status, when there was one.
        status: Option<u16>,
        /// The error, with Portainer's message.
        reason: String,
    },
    /// The listener was stopped.
    Stopped,
}

impl StreamState {
    /// Whether the reader of this endpoint has ended (finished, failed or
    /// stopped) and will not connect again in this run.
    pub fn is_ended(&self) -> bool {
        matches!(
            self,
            StreamState::Finished | StreamState::Failed { .. } | StreamState::Stopped
        )
    }
}

/// The state and counters of one endpoint's reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStatus {
    /// The endpoint.
    pub endpoint_id: u64,
    /// Where its connection stands.
    pub state: StreamState,
    /// The time of the newest event delivered.
    pub last_event: Option<Timestamp>,
    /// Events handed to the dispatcher.
    pub events_delivered: u64,
    /// Connections opened again after the first.
    pub reconnects: u64,
    /// Lines skipped because they were malformed or too long.
    pub lines_skipped: u64,
    /// Events lost because the dispatcher's queue was full.
    pub events_dropped: u64,
}

/// One reader's live status: its state behind a lock, taken only when the
/// state changes, and counters the reader bumps on every event without one.
#[derive(Debug)]
pub(crate) struct Tracker {
    endpoint_id: u64,
    state: Mutex<StreamState>,
    /// Nanoseconds of the newest event delivered; `i64::MIN` before any.
    last_event: AtomicI64,
    pub(crate) delivered: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

impl Tracker {
    pub(crate) fn new(endpoint_id: u64) -> Self {
        Tracker {
            endpoint_id,
            state: Mutex::new(StreamState::Connecting),
            last_event: AtomicI64::new(i64::MIN),
            delivered: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Records a new state; returns the status as it now stands.
    pub(crate) fn set_state(&self, state: StreamState) -> StreamStatus {
        *self.state.lock() = state;
        self.snapshot()
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.state.lock().is_ended()
    }

    pub(crate) fn set_last_event(&self, time: Timestamp) {
        self.last_event.store(time.unix_nanos(), Ordering::Relaxed);
    }

    /// Adds one to a counter; returns its new value.
    pub(crate) fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn snapshot(&self) -> StreamStatus {
        let last = self.last_event.load(Ordering::Relaxed);
        StreamStatus {
            endpoint_id: self.endpoint_id,
            state: self.state.lock().clone(),
            last_event: (last != i64::MIN).then(|| Timestamp::from_unix_nanos(last)),
            events_delivered: self.delivered.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            lines_skipped: self.skipped.load(Ordering::Relaxed),
            events_dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}
