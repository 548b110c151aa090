//! The endpoint refresher: when following every endpoint, reads Portainer's
//! endpoint list again on an interval, starts readers for new endpoints and
//! stops those of deleted ones. It also ends the run once every reader has
//! ended for good.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, select};

use super::{Readers, RunContext};
use crate::transport::Cancel;

pub(super) struct Refresher {
    pub(super) context: RunContext,
    pub(super) readers: Readers,
    pub(super) interval: Duration,
    /// Cancelled by `stop` to cut short a reading of the list.
    pub(super) cancel: Arc<Cancel>,
    /// Never carries a message: it disconnects when the listener stops.
    pub(super) stop: Receiver<()>,
    /// The id of each reader that ends.
    pub(super) ended: Receiver<u64>,
}

impl Refresher {
    pub(super) fn run(self) {
        let mut failing = false;
        loop {
            select! {
                recv(self.stop) -> _ => return,
                recv(self.ended) -> _ => {
                    if self.every_reader_ended() {
                        log::debug!("every endpoint has ended; the run ends");
                        return;
                    }
                    continue;
                }
                default(self.interval) => {}
            }
            if self.cancel.is_cancelled() {
                return;
            }
            match self
                .context
                .shared
                .client
                .endpoints_cancellable(self.cancel.clone())
            {
                Ok(endpoints) => {
                    if failing {
                        log::info!("the endpoint list can be read again");
                        failing = false;
                    }
                    let ids = endpoints
                        .iter()
                        .filter(|endpoint| endpoint.has_docker_api())
                        .map(|endpoint| endpoint.id)
                        .collect();
                    self.apply(&ids);
                }
                Err(_) if self.cancel.is_cancelled() => return,
                Err(err) => {
                    if failing {
                        log::debug!("reading the endpoint list failed again: {err}");
                    } else {
                        log::warn!(
                            "reading the endpoint list failed; keeping the readers as they are: {err}"
                        );
                        failing = true;
                    }
                }
            }
        }
    }

    /// Whether there are readers and all of them have ended for good.
    fn every_reader_ended(&self) -> bool {
        let readers = self.readers.lock();
        !readers.is_empty() && readers.values().all(|reader| reader.status.is_ended())
    }

    /// Starts readers for endpoints not followed yet, stops those of
    /// endpoints that are gone.
    fn apply(&self, ids: &BTreeSet<u64>) {
        let mut readers = self.readers.lock();
        let gone: Vec<u64> = readers
            .keys()
            .filter(|id| !ids.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(mut reader) = readers.remove(&id) {
                log::info!("endpoint {id} is no longer listed; stopping its reader");
                reader.stop();
            }
        }
        for &id in ids {
            if readers.contains_key(&id) {
                continue;
            }
            match self.context.spawn_reader(id) {
                Ok(handle) => {
                    log::info!("endpoint {id} is new; following its events");
                    readers.insert(id, handle);
                }
                Err(err) => log::error!("cannot follow new endpoint {id}: {err}"),
            }
        }
    }
}
