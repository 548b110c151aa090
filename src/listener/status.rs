//! What a program can read about each endpoint the listener follows.

use std::time::SystemTime;

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

impl StreamStatus {
    pub(crate) fn new(endpoint_id: u64) -> Self {
        StreamStatus {
            endpoint_id,
            state: StreamState::Connecting,
            last_event: None,
            events_delivered: 0,
            reconnects: 0,
            lines_skipped: 0,
            events_dropped: 0,
        }
    }
}
