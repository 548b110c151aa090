//! One reader thread per endpoint: opens the event stream, passes events to
//! the dispatcher, and reconnects after failures until the listener stops.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;

use super::reconnect::{Backoff, Resume};
use super::status::{StreamState, StreamStatus};
use super::{ListenerResult, Shared};
use crate::error::Error;
use crate::query::Timestamp;
use crate::stream::EventStream;
use crate::transport::Cancel;

pub(super) struct Reader {
    pub(super) generation: u64,
    pub(super) endpoint_id: u64,
    pub(super) shared: Arc<Shared>,
    pub(super) cancel: Arc<Cancel>,
    pub(super) status: Arc<Mutex<StreamStatus>>,
    pub(super) events: Sender<ListenerResult>,
    /// Never carries a message: it disconnects when this reader must stop.
    pub(super) stop: Receiver<()>,
    /// Where to say that this reader has ended, when someone listens.
    pub(super) ended: Option<Sender<u64>>,
}

/// How one connection ended.
enum Outcome {
    /// The listener is stopping.
    Stopped,
    /// The daemon closed the stream at `until`.
    Finished,
    /// The endpoint is gone for good.
    Final(Error),
    /// Worth another attempt.
    Retry { reason: String, kind: String },
}

impl Reader {
    pub(super) fn run(self) {
        self.follow();
        if let Some(ended) = &self.ended {
            let _ = ended.send(self.endpoint_id);
        }
    }

    /// Connects, reads and reconnects until stopped or ended for good.
    fn follow(&self) {
        let mut resume = Resume::default();
        let mut backoff = Backoff::default();
        let mut failing: Option<String> = None;
        let mut attempts: u64 = 0;
        loop {
            if self.is_stopping() {
                break;
            }
            if attempts > 0 {
                self.status.lock().reconnects += 1;
            }
            attempts += 1;
            self.set_state(StreamState::Connecting);
            let opened_at = Instant::now();
            let delivered_before = self.status.lock().events_delivered;
            let outcome = self.connect_once(&mut resume, &mut failing);

            // A stream that delivered or stayed up has proved the endpoint
            // healthy: the next failure is news again, and waits start over.
            let delivered = self.status.lock().events_delivered > delivered_before;
            if delivered || opened_at.elapsed() >= self.shared.reconnect_interval() {
                backoff.reset();
                self.recovered(&mut failing);
            }
            let (reason, kind) = match outcome {
                Outcome::Stopped => break,
                Outcome::Finished => {
                    log::debug!("endpoint {}: event window complete", self.endpoint_id);
                    self.set_state(StreamState::Finished);
                    return;
                }
                Outcome::Final(err) => {
                    log::error!(
                        "endpoint {}: giving up on its event stream: {err}",
                        self.endpoint_id
                    );
                    self.set_state(StreamState::Failed {
                        status: err.status(),
                        reason: err.to_string(),
                    });
                    return;
                }
                Outcome::Retry { reason, kind } => (reason, kind),
            };

            let delay = backoff.next_delay(self.shared.reconnect_interval(), fastrand::f64());
            if failing.as_deref() == Some(kind.as_str()) {
                log::debug!(
                    "endpoint {}: {reason}; retry {} in {delay:?}",
                    self.endpoint_id,
                    backoff.failures()
                );
            } else {
                log::warn!(
                    "endpoint {}: {reason}; reconnecting in {delay:?}",
                    self.endpoint_id
                );
                failing = Some(kind);
            }
            self.set_state(StreamState::Waiting {
                until: SystemTime::now() + delay,
                reason,
            });
            match self.stop.recv_timeout(delay) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => break,
            }
        }
        self.set_state(StreamState::Stopped);
    }

    /// Opens one stream and reads it to its end.
    fn connect_once(&self, resume: &mut Resume, failing: &mut Option<String>) -> Outcome {
        let query = self
            .shared
            .query
            .with_since(resume.since(self.shared.query.since_time()));
        let stream =
            match self
                .shared
                .client
                .open_stream(self.endpoint_id, &query, self.cancel.clone())
            {
                Ok(stream) => stream,
                Err(_) if self.is_stopping() => return Outcome::Stopped,
                Err(err) if err.is_final() => return Outcome::Final(err),
                // Past `until` the window is over; an endpoint that cannot be
                // reached now would be retried for ever.
                Err(err) if self.window_is_over() => return Outcome::Final(err),
                Err(err) => {
                    return Outcome::Retry {
                        kind: err.kind_label(),
                        reason: err.to_string(),
                    };
                }
            };
        log::debug!("endpoint {}: event stream open", self.endpoint_id);
        self.set_state(StreamState::Streaming);
        self.pump(stream, resume, failing)
    }

    /// Logs the end of a run of failures, once.
    fn recovered(&self, failing: &mut Option<String>) {
        if let Some(previous) = failing.take() {
            log::info!(
                "endpoint {}: event stream healthy again (it was failing with {previous})",
                self.endpoint_id
            );
        }
    }

    /// Passes the stream's events on until it ends.
    fn pump(
        &self,
        stream: EventStream,
        resume: &mut Resume,
        failing: &mut Option<String>,
    ) -> Outcome {
        for item in stream {
            if self.is_stopping() {
                return Outcome::Stopped;
            }
            match item {
                Ok(event) => {
                    if !resume.admit(&event) {
                        log::debug!(
                            "endpoint {}: dropped an event replayed after reconnecting",
                            self.endpoint_id
                        );
                        continue;
                    }
                    self.recovered(failing);
                    self.forward(
                        ListenerResult {
                            endpoint_id: self.endpoint_id,
                            event,
                        },
                        resume.last(),
                    );
                }
                Err(err) if err.is_line_error() => {
                    log::warn!("endpoint {}: skipped a line: {err}", self.endpoint_id);
                    self.status.lock().lines_skipped += 1;
                }
                Err(err) => {
                    return Outcome::Retry {
                        kind: err.kind_label(),
                        reason: format!("event stream broke: {err}"),
                    };
                }
            }
        }
        if self.is_stopping() {
            return Outcome::Stopped;
        }
        match self.window_is_over() {
            true => Outcome::Finished,
            false => Outcome::Retry {
                kind: "end".into(),
                reason: "the server ended the event stream".into(),
            },
        }
    }

    fn forward(&self, result: ListenerResult, last: Option<Timestamp>) {
        if self.shared.debug {
            log::debug!(
                "endpoint {}: {} {} {}",
                self.endpoint_id,
                result.event.kind.as_deref().unwrap_or("-"),
                result.event.action.as_deref().unwrap_or("-"),
                result.event.actor_id().unwrap_or("-")
            );
        }
        let sent = self.events.try_send(result);
        let mut status = self.status.lock();
        status.last_event = last;
        match sent {
            Ok(()) => status.events_delivered += 1,
            Err(TrySendError::Full(_)) => {
                status.events_dropped += 1;
                if status.events_dropped == 1 {
                    log::warn!(
                        "endpoint {}: the dispatcher's queue is full (callbacks too slow); \
                         dropping events, counted in the status",
                        self.endpoint_id
                    );
                }
            }
            // The dispatcher is gone, so the listener is stopping.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn window_is_over(&self) -> bool {
        self.shared
            .query
            .until_time()
            .is_some_and(|until| Timestamp::now() >= until)
    }

    /// Records a new state and tells the status subscribers.
    fn set_state(&self, state: StreamState) {
        let snapshot = {
            let mut status = self.status.lock();
            status.state = state;
            status.clone()
        };
        self.shared.publish_status(self.generation, &snapshot);
    }

    /// The listener stopping and the endpoint's removal both cancel.
    fn is_stopping(&self) -> bool {
        self.cancel.is_cancelled()
    }
}
