//! The dispatcher thread: takes events from the readers and hands each to the
//! callbacks and the subscribers, in arrival order.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, TrySendError, select};

use super::{Batch, Shared};

pub(super) struct Dispatcher {
    pub(super) generation: u64,
    /// Set when every reader has ended and the queue is drained.
    pub(super) ended: Arc<AtomicBool>,
    pub(super) shared: Arc<Shared>,
    pub(super) events: Receiver<Batch>,
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
        loop {
            select! {
                recv(self.events) -> message => match message {
                    Ok(batch) => self.deliver(batch),
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

    /// Hands a batch to the callbacks, each event to all of them in turn,
    /// then to the subscribers.
    fn deliver(&self, batch: Batch) {
        let count = batch.len();
        let callbacks = self.shared.callbacks.read().clone();
        for result in &batch {
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
        self.queued.fetch_sub(count, Ordering::AcqRel);
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let mut subscribers = self.shared.subscribers.lock();
        if subscribers.generation != self.generation {
            return;
        }
        subscribers.events.retain_mut(|subscriber| {
            for result in &batch {
                match subscriber.sender.try_send(result.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        subscriber.dropped += 1;
                        if subscriber.dropped == 1 {
                            log::warn!(
                                "a subscriber's queue is full: it misses events until it catches up"
                            );
                        } else {
                            log::debug!("a subscriber has missed {} events", subscriber.dropped);
                        }
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        log::debug!("a subscriber's receiver was dropped; forgetting it");
                        return false;
                    }
                }
            }
            true
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
