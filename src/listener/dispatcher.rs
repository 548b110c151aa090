//! The dispatcher thread: takes events from the readers and hands each to the
//! callbacks and the subscribers, in arrival order.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender, select};

use super::handoff::{Batch, POOLED_BYTES};
use super::{ListenerResult, Shared};
use crate::event::Packed;

pub(super) struct Dispatcher {
    pub(super) generation: u64,
    /// Set when every reader has ended and the queue is drained.
    pub(super) ended: Arc<AtomicBool>,
    pub(super) shared: Arc<Shared>,
    pub(super) events: Receiver<Batch>,
    /// Where emptied batches go back for the readers to fill again.
    pub(super) pool: Sender<Packed>,
    /// Events queued by the readers and not yet delivered.
    pub(super) queued: Arc<AtomicUsize>,
    /// Never carries a message: it disconnects when the listener stops.
    pub(super) stop: Receiver<()>,
    pub(super) stopping: Arc<AtomicBool>,
}

impl Dispatcher {
    /// Runs until the listener stops or every reader has ended. In the second
    /// case every queued event is still delivered first.
    pub(super) fn run(self) {
        super::ON_DISPATCHER.with(|on| on.set(true));
        // The events of the batch at hand; kept for its room.
        let mut results = Vec::new();
        loop {
            select! {
                recv(self.events) -> message => match message {
                    Ok(batch) => self.deliver(batch, &mut results),
                    Err(_) => {
                        self.ended.store(true, Ordering::Release);
                        break;
                    }
                },
                recv(self.stop) -> _ => break,
            }
            if self.stopping.load(Ordering::Acquire) {
                break;
            }
        }
        // Disconnects this run's subscribers: iteration over them ends.
        self.shared.close_run(self.generation);
        log::debug!("dispatcher finished");
    }

    /// Makes the batch's events, then hands them to the callbacks, each event
    /// to all of them in turn, then to the subscribers.
    fn deliver(&self, batch: Batch, results: &mut Vec<ListenerResult>) {
        let Batch {
            endpoint_id,
            events: mut packed,
        } = batch;
        let count = packed.len();
        results.extend((0..count).map(|index| ListenerResult {
            endpoint_id,
            event: packed.event(index),
        }));
        if packed.footprint() <= POOLED_BYTES {
            packed.clear();
            let _ = self.pool.try_send(packed);
        }
        self.call_back(results);
        self.queued.fetch_sub(count, Ordering::AcqRel);
        if !self.stopping.load(Ordering::Acquire) {
            self.publish(results);
        }
        results.clear();
    }

    fn call_back(&self, results: &[ListenerResult]) {
        let callbacks = self.shared.callbacks.read().clone();
        for result in results {
            for callback in callbacks.iter() {
                if self.stopping.load(Ordering::Acquire) {
                    return;
                }
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (callback.function)(result))) {
                    log::error!(
                        "callback {} panicked on an event of endpoint {}: {}",
                        callback.id.0,
                        result.endpoint_id,
                        panic_message(&panic)
                    );
                }
            }
        }
    }

    /// Sends every event to every subscriber of this run: copies to all but
    /// the last, which gets the events themselves.
    fn publish(&self, results: &mut Vec<ListenerResult>) {
        let mut subscribers = self.shared.subscribers.lock();
        if subscribers.generation != self.generation {
            return;
        }
        let mut left = subscribers.events.len();
        subscribers.events.retain_mut(|subscriber| {
            left -= 1;
            if left == 0 {
                results.drain(..).all(|result| subscriber.offer(result))
            } else {
                results
                    .iter()
                    .all(|result| subscriber.offer(result.clone()))
            }
        });
    }
}

fn panic_message(panic: &Box<dyn Any + Send>) -> &str {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "(no message)"
    }
}
