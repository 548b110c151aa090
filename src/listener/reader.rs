//! One reader thread per endpoint: opens the event stream, passes events to
//! the dispatcher, and reconnects after failures until the listener stops.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::Shared;
use super::handoff::Handoff;
use super::reconnect::{Backoff, Resume};
use super::status::{StreamState, Tracker};
use crate::error::Error;
use crate::query::Timestamp;
use crate::stream::EventStream;
use crate::transport::{self, Cancel};

pub(super) struct Reader {
    pub(super) generation: u64,
    pub(super) endpoint_id: u64,
    pub(super) shared: Arc<Shared>,
    pub(super) cancel: Arc<Cancel>,
    pub(super) status: Arc<Tracker>,
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
    /// Follows the endpoint, passing its events on through `handoff`.
    pub(super) fn run(self, handoff: Handoff) {
        self.follow(&Rc::new(RefCell::new(handoff)));
        if let Some(ended) = &self.ended {
            let _ = ended.send(self.endpoint_id);
        }
    }

    /// Connects, reads and reconnects until stopped or ended for good.
    fn follow(&self, handoff: &Rc<RefCell<Handoff>>) {
        let mut resume = Resume::default();
        let mut backoff = Backoff::default();
        let mut failing: Option<String> = None;
        let mut attempts: u64 = 0;
        loop {
            if self.is_stopping() {
                break;
            }
            if attempts > 0 {
                Tracker::bump(&self.status.reconnects);
            }
            attempts += 1;
            self.set_state(StreamState::Connecting);
            let opened_at = Instant::now();
            let delivered_before = self.status.delivered.load(Ordering::Relaxed);
            let outcome = self.connect_once(&mut resume, &mut failing, handoff);

            // A stream that delivered or stayed up has proved the endpoint
            // healthy: the next failure is news again, and waits start over.
            let delivered = self.status.delivered.load(Ordering::Relaxed) > delivered_before;
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
    fn connect_once(
        &self,
        resume: &mut Resume,
        failing: &mut Option<String>,
        handoff: &Rc<RefCell<Handoff>>,
    ) -> Outcome {
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
        self.pump(stream, resume, failing, handoff)
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

    /// Passes the stream's events on until it ends. Events are handed to
    /// the dispatcher in batches, each just before the reader would wait for
    /// the network (see [`handoff`](super::handoff)).
    fn pump(
        &self,
        mut stream: EventStream,
        resume: &mut Resume,
        failing: &mut Option<String>,
        handoff: &Rc<RefCell<Handoff>>,
    ) -> Outcome {
        let reading = handoff.clone();
        let broken = transport::with_read_hook(
            move |read| reading.borrow_mut().before_read(read),
            || loop {
                // The line is read first, with the hand-off free for the read
                // hook, and only then parsed into the batch.
                let item = stream.next_with(|line| handoff.borrow_mut().parse(line))?;
                if self.is_stopping() {
                    // The event just parsed was not checked against those
                    // already delivered (it may be a replay): it stays out.
                    if item.is_ok() {
                        handoff.borrow_mut().discard_newest();
                    }
                    return None;
                }
                match item {
                    Ok(()) => self.accept(&mut handoff.borrow_mut(), resume, failing),
                    Err(err) if err.is_line_error() => {
                        log::warn!("endpoint {}: skipped a line: {err}", self.endpoint_id);
                        Tracker::bump(&self.status.skipped);
                    }
                    Err(err) => return Some(err),
                }
            },
        );
        handoff.borrow_mut().flush();
        if self.is_stopping() {
            return Outcome::Stopped;
        }
        match broken {
            Some(err) => Outcome::Retry {
                kind: err.kind_label(),
                reason: format!("event stream broke: {err}"),
            },
            None if self.window_is_over() => Outcome::Finished,
            None => Outcome::Retry {
                kind: "end".into(),
                reason: "the server ended the event stream".into(),
            },
        }
    }

    /// Keeps the event just parsed, unless a resumed stream replayed it.
    fn accept(&self, handoff: &mut Handoff, resume: &mut Resume, failing: &mut Option<String>) {
        if !resume.admit(&handoff.newest()) {
            handoff.discard_newest();
            log::debug!(
                "endpoint {}: dropped an event replayed after reconnecting",
                self.endpoint_id
            );
            return;
        }
        self.recovered(failing);
        if self.shared.debug {
            let key = handoff.newest();
            log::debug!(
                "endpoint {}: {} {} {}",
                self.endpoint_id,
                key.kind.unwrap_or("-"),
                key.action.unwrap_or("-"),
                key.actor.unwrap_or("-")
            );
        }
        if let Some(last) = resume.last() {
            self.status.set_last_event(last);
        }
        handoff.keep_newest();
    }

    fn window_is_over(&self) -> bool {
        self.shared
            .query
            .until_time()
            .is_some_and(|until| Timestamp::now() >= until)
    }

    /// Records a new state and tells the status subscribers.
    fn set_state(&self, state: StreamState) {
        let snapshot = self.status.set_state(state);
        self.shared.publish_status(self.generation, &snapshot);
    }

    /// The listener stopping and the endpoint's removal both cancel.
    fn is_stopping(&self) -> bool {
        self.cancel.is_cancelled()
    }
}
