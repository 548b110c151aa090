//! The listener: follows the events of one or every endpoint on background
//! threads and hands them to callbacks and subscribers.

mod dispatcher;
mod endpoints;
mod handoff;
mod reader;
mod reconnect;
mod status;

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::error::Error;
use crate::event::{DockerEvent, Packed};
use crate::query::{EventFilters, EventQuery, Timestamp};
use crate::transport::Cancel;

use self::dispatcher::Dispatcher;
use self::endpoints::Refresher;
use self::handoff::{Batch, Handoff};
use self::reader::Reader;
use self::status::Tracker;
pub use self::status::{StreamState, StreamStatus};

/// The default reconnect interval: 5 seconds.
pub const DEFAULT_RECONNECT_INTERVAL: Duration = Duration::from_secs(5);

/// The default interval between two readings of the endpoint list when
/// following every endpoint: 60 seconds.
pub const DEFAULT_ENDPOINT_REFRESH: Duration = Duration::from_secs(60);

/// The default capacity of the queue between readers and the dispatcher, and
/// of each subscriber's channel: 65,536 events.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;

/// One event and the endpoint it came from: what callbacks and subscribers get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerResult {
    /// The endpoint the event came from.
    pub endpoint_id: u64,
    /// The event. Cloning it is cheap: its text is shared.
    pub event: DockerEvent,
}

/// The type of a callback: any function or closure taking a
/// [`ListenerResult`], safe to call from the dispatcher thread.
pub type Callback = dyn Fn(&ListenerResult) + Send + Sync + 'static;

/// Names one registered callback, for [`Listener::unregister_callback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallbackId(u64);

#[derive(Clone)]
struct Registered {
    id: CallbackId,
    identity: Option<Identity>,
    function: Arc<Callback>,
}

/// What makes two registered callbacks the same callable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    /// A function item or a closure that captures nothing: its type alone.
    Type(TypeId),
    /// A function pointer: its address.
    Pointer(usize),
}

impl Identity {
    fn of<F: Any>(callback: &F) -> Option<Identity> {
        if size_of::<F>() == 0 {
            return Some(Identity::Type(TypeId::of::<F>()));
        }
        (callback as &dyn Any)
            .downcast_ref::<fn(&ListenerResult)>()
            .map(|pointer| Identity::Pointer(*pointer as usize))
    }
}

thread_local! {
    /// Set on dispatcher threads, where callbacks run.
    static ON_DISPATCHER: Cell<bool> = const { Cell::new(false) };
}

/// State shared by the listener handle and its threads.
struct Shared {
    client: Client,
    endpoint: Option<u64>,
    query: EventQuery,
    reconnect_interval_ms: AtomicU64,
    debug: bool,
    queue_capacity: usize,
    /// Replaced whole on change, so the dispatcher reads it without holding a lock.
    callbacks: RwLock<Arc<Vec<Registered>>>,
    next_callback: AtomicU64,
    subscribers: Mutex<Subscribers>,
    endpoint_refresh: Option<Duration>,
}

/// The subscribers of one run: the one running, or the next to start. A
/// run's threads feed them only while the generation is theirs, so a run
/// that is winding down never touches the next run's subscribers.
#[derive(Default)]
struct Subscribers {
    generation: u64,
    events: Vec<Subscriber>,
    statuses: Vec<Sender<StreamStatus>>,
}

/// One subscriber's channel and how many events it missed.
struct Subscriber {
    sender: Sender<ListenerResult>,
    dropped: u64,
}

impl Subscriber {
    /// Queues one event; a full queue drops it (and counts it). Returns
    /// false once the receiver is gone, so the subscriber can be forgotten.
    fn offer(&mut self, result: ListenerResult) -> bool {
        match self.sender.try_send(result) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                if self.dropped == 1 {
                    log::warn!(
                        "a subscriber's queue is full: it misses events until it catches up"
                    );
                } else {
                    log::debug!("a subscriber has missed {} events", self.dropped);
                }
                true
            }
            Err(TrySendError::Disconnected(_)) => {
                log::debug!("a subscriber's receiver was dropped; forgetting it");
                false
            }
        }
    }
}

impl Shared {
    fn reconnect_interval(&self) -> Duration {
        Duration::from_millis(self.reconnect_interval_ms.load(Ordering::Relaxed))
    }

    /// Tells the status subscribers of run `generation` of a change; forgets
    /// those that left.
    fn publish_status(&self, generation: u64, status: &StreamStatus) {
        let mut subscribers = self.subscribers.lock();
        if subscribers.generation != generation || subscribers.statuses.is_empty() {
            return;
        }
        subscribers.statuses.retain(|subscriber| {
            !matches!(
                subscriber.try_send(status.clone()),
                Err(crossbeam_channel::TrySendError::Disconnected(_))
            )
        });
    }

    /// Disconnects the subscribers of run `generation`, if they are still
    /// its own; later subscribers belong to the next run.
    fn close_run(&self, generation: u64) {
        let mut subscribers = self.subscribers.lock();
        if subscribers.generation == generation {
            subscribers.events.clear();
            subscribers.statuses.clear();
            subscribers.generation += 1;
        }
    }
}

/// Settings for a [`Listener`]; made by [`Listener::builder`].
#[derive(Debug, Clone)]
pub struct ListenerBuilder {
    client: Client,
    endpoint: Option<u64>,
    event_types: Option<Vec<String>>,
    filters: EventFilters,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    reconnect_interval: Duration,
    debug: bool,
    queue_capacity: usize,
    endpoint_refresh: Option<Duration>,
}

impl ListenerBuilder {
    /// Follows only this endpoint. Default: every endpoint with a Docker API.
    pub fn endpoint(mut self, endpoint_id: impl Into<Option<u64>>) -> Self {
        self.endpoint = endpoint_id.into();
        self
    }

    /// Keeps only events of these types (`container`, `image`, `network`,
    /// ...), sent to Docker as its `type` filter. Default: every type.
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Any other Docker filters (labels, containers, actions, ...).
    pub fn filters(mut self, filters: EventFilters) -> Self {
        self.filters = filters;
        self
    }

    /// Starts with the events since this time (the daemon keeps its last 256).
    /// Default: only events from the start on.
    pub fn since(mut self, time: impl Into<Timestamp>) -> Self {
        self.since = Some(time.into());
        self
    }

    /// Ends each endpoint's stream at this time. Once every endpoint's window
    /// is complete, the subscribers' receivers disconnect. An endpoint that
    /// cannot be reached once this time has passed ends as failed rather than
    /// being retried for ever.
    pub fn until(mut self, time: impl Into<Timestamp>) -> Self {
        self.until = Some(time.into());
        self
    }

    /// The wait before reconnecting a dropped stream; repeated failures wait
    /// longer, up to a minute. Default: [`DEFAULT_RECONNECT_INTERVAL`].
    pub fn reconnect_interval(mut self, interval: Duration) -> Self {
        self.reconnect_interval = interval;
        self
    }

    /// Also logs every event delivered, at debug level. Default: off.
    pub fn debug(mut self, on: bool) -> Self {
        self.debug = on;
        self
    }

    /// The capacity of the queue from the readers to the dispatcher and of
    /// each subscriber's channel. When callbacks fall this far behind, new
    /// events are dropped and counted in [`StreamStatus::events_dropped`]
    /// rather than stalling the readers. Default: [`DEFAULT_QUEUE_CAPACITY`].
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.queue_capacity = events.max(1);
        self
    }

    /// How often the endpoint list is read again when following every
    /// endpoint: readers start for new endpoints with a Docker API and stop
    /// for deleted ones. `None` reads it only at start. Not used with one
    /// endpoint or with [`until`](Self::until). Default:
    /// [`DEFAULT_ENDPOINT_REFRESH`].
    pub fn endpoint_refresh(mut self, interval: Option<Duration>) -> Self {
        self.endpoint_refresh = interval;
        self
    }

    /// Makes the listener. Nothing is started until [`Listener::start`].
    pub fn build(self) -> Listener {
        let mut filters = self.filters;
        for kind in self.event_types.into_iter().flatten() {
            filters = filters.event_type(kind);
        }
        let mut query = EventQuery::new().filters(filters);
        if let Some(since) = self.since {
            query = query.since(since);
        }
        if let Some(until) = self.until {
            query = query.until(until);
        }
        Listener {
            shared: Arc::new(Shared {
                client: self.client,
                endpoint: self.endpoint,
                query,
                reconnect_interval_ms: AtomicU64::new(duration_ms(self.reconnect_interval)),
                debug: self.debug,
                queue_capacity: self.queue_capacity,
                callbacks: RwLock::new(Arc::new(Vec::new())),
                next_callback: AtomicU64::new(1),
                subscribers: Mutex::new(Subscribers::default()),
                endpoint_refresh: self.endpoint_refresh,
            }),
            lifecycle: Mutex::new(()),
            starting: Mutex::new(None),
            run: Mutex::new(None),
            last_status: Mutex::new(Vec::new()),
        }
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Follows Docker events of one or every endpoint in the background.
///
/// One thread per endpoint (`portainer reader N`) reads and parses its event
/// stream; one thread (`portainer dispatcher`) calls the callbacks and feeds
/// the subscribers, in the order each endpoint sent the events. A reader
/// hands its events over in batches: all those it parsed before it would
/// wait for the network again, at most 128. An event arriving alone goes out
/// at once; under a sustained flood one may wait for up to 127 more to be
/// parsed after it (a few tenths of a millisecond) before it is delivered. A dropped
/// stream is opened again after the reconnect interval, resuming just after
/// the last event delivered, so nothing is lost or repeated while the daemon
/// still holds the missed events (its last 256). A refused key (401), a
/// forbidden endpoint (403) or a missing one (404) ends that endpoint's
/// reader for good, logged as an error.
///
/// Dropping the listener stops it.
///
/// ```no_run
/// use portainer::{Client, Listener};
///
/// # fn main() -> Result<(), portainer::Error> {
/// let client = Client::new("https://portainer.example.com", "ptr_xxx")?;
/// let listener = Listener::builder(client).event_types(["container"]).build();
/// listener.register_callback(|result| {
///     println!("{}: {:?}", result.endpoint_id, result.event.action());
/// });
/// listener.start()?;
/// // ... later
/// listener.stop();
/// # Ok(())
/// # }
/// ```
pub struct Listener {
    shared: Arc<Shared>,
    /// Held for the whole of `start` and `stop`, so they never overlap.
    lifecycle: Mutex<()>,
    /// Cuts short the endpoint list read of a `start` under way.
    starting: Mutex<Option<Arc<Cancel>>>,
    run: Mutex<Option<Run>>,
    /// The readers' statuses when the last run stopped.
    last_status: Mutex<Vec<StreamStatus>>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("client", &self.shared.client)
            .field("endpoint", &self.shared.endpoint)
            .field("query", &self.shared.query)
            .field("reconnect_interval", &self.shared.reconnect_interval())
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

/// The threads and handles of one run, from `start` to `stop`.
struct Run {
    generation: u64,
    stopping: Arc<AtomicBool>,
    /// Set by the dispatcher when every reader has ended on its own.
    ended: Arc<AtomicBool>,
    /// Dropped to wake the dispatcher and the refresher.
    stop: Option<Sender<()>>,
    readers: Readers,
    refresher: Option<(Arc<Cancel>, JoinHandle<()>)>,
    dispatcher: Option<JoinHandle<()>>,
    dispatcher_thread: ThreadId,
}

/// The readers of a run by endpoint id, shared with the refresher.
type Readers = Arc<Mutex<BTreeMap<u64, ReaderHandle>>>;

/// The listener's hold on one reader thread.
struct ReaderHandle {
    cancel: Arc<Cancel>,
    /// Dropped to wake the reader from a wait.
    wake: Option<Sender<()>>,
    status: Arc<Tracker>,
    thread: Option<JoinHandle<()>>,
}

impl ReaderHandle {
    /// Ends the reader: shuts its socket, wakes it, and waits for its thread.
    fn stop(&mut self) {
        self.signal();
        self.join();
    }

    fn signal(&mut self) {
        self.cancel.cancel();
        drop(self.wake.take());
    }

    fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("a reader thread panicked");
            }
        }
    }
}

/// What every reader of a run is started with.
#[derive(Clone)]
struct RunContext {
    generation: u64,
    shared: Arc<Shared>,
    events: Sender<Batch>,
    /// Emptied batches, for the readers to fill again.
    pool: Receiver<Packed>,
    /// Events handed to the dispatcher and not yet delivered.
    queued: Arc<AtomicUsize>,
    /// Tells the refresher that a reader ended, when there is one.
    ended: Option<Sender<u64>>,
}

impl RunContext {
    fn spawn_reader(&self, endpoint_id: u64) -> Result<ReaderHandle, Error> {
        let cancel = Arc::new(Cancel::default());
        let (wake, woken) = crossbeam_channel::bounded::<()>(0);
        let status = Arc::new(Tracker::new(endpoint_id));
        let reader = Reader {
            generation: self.generation,
            endpoint_id,
            shared: self.shared.clone(),
            cancel: cancel.clone(),
            status: status.clone(),
            stop: woken,
            ended: self.ended.clone(),
        };
        let handoff = Handoff::new(
            endpoint_id,
            self.events.clone(),
            self.pool.clone(),
            self.queued.clone(),
            self.shared.queue_capacity,
            status.clone(),
        );
        let thread = spawn(format!("portainer reader {endpoint_id}"), move || {
            reader.run(handoff)
        })?;
        Ok(ReaderHandle {
            cancel,
            wake: Some(wake),
            status,
            thread: Some(thread),
        })
    }
}

impl Listener {
    /// Settings for a listener on `client`'s Portainer or Docker Engine, with
    /// defaults.
    pub fn builder(client: Client) -> ListenerBuilder {
        ListenerBuilder {
            client,
            endpoint: None,
            event_types: None,
            filters: EventFilters::new(),
            since: None,
            until: None,
            reconnect_interval: DEFAULT_RECONNECT_INTERVAL,
            debug: false,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            endpoint_refresh: Some(DEFAULT_ENDPOINT_REFRESH),
        }
    }

    /// Calls `callback` with every event, on the dispatcher thread.
    ///
    /// A function (by name or as a `fn` pointer), or a closure that captures
    /// nothing, that is already registered is not added again: its existing
    /// id is returned and it is still called once per event. Closures that
    /// capture state are told apart by registration. A panic in a callback is caught and logged; the
    /// other callbacks and the listener go on.
    pub fn register_callback<F>(&self, callback: F) -> CallbackId
    where
        F: Fn(&ListenerResult) + Send + Sync + 'static,
    {
        let identity = Identity::of(&callback);
        let mut callbacks = self.shared.callbacks.write();
        if let Some(existing) = callbacks
            .iter()
            .find(|registered| identity.is_some() && registered.identity == identity)
        {
            return existing.id;
        }
        let id = CallbackId(self.shared.next_callback.fetch_add(1, Ordering::Relaxed));
        let mut updated = Vec::clone(&callbacks);
        updated.push(Registered {
            id,
            identity,
            function: Arc::new(callback),
        });
        *callbacks = Arc::new(updated);
        id
    }

    /// Stops calling a callback. Returns whether it was registered. A call
    /// already under way finishes.
    pub fn unregister_callback(&self, id: CallbackId) -> bool {
        let mut callbacks = self.shared.callbacks.write();
        if !callbacks.iter().any(|registered| registered.id == id) {
            return false;
        }
        let updated = callbacks
            .iter()
            .filter(|registered| registered.id != id)
            .cloned()
            .collect();
        *callbacks = Arc::new(updated);
        true
    }

    /// A channel that receives every event from now until the listener
    /// stops (or every endpoint has ended), when it disconnects. Subscribing
    /// before `start`, or once a run has ended, receives from the next start.
    ///
    /// Dropping the receiver unsubscribes. A subscriber that falls
    /// [`queue_capacity`](ListenerBuilder::queue_capacity) events behind
    /// misses the newer ones (a warning is logged).
    pub fn subscribe(&self) -> Receiver<ListenerResult> {
        let (sender, receiver) = crossbeam_channel::bounded(self.shared.queue_capacity);
        self.shared
            .subscribers
            .lock()
            .events
            .push(Subscriber { sender, dropped: 0 });
        receiver
    }

    /// A channel that receives an endpoint's status each time its state
    /// changes (connecting, streaming, waiting, finished, failed, stopped),
    /// until the listener stops. A program can, for instance, list its
    /// containers again after a reconnect whose gap the daemon could not fill.
    ///
    /// A subscriber more than [`queue_capacity`](ListenerBuilder::queue_capacity)
    /// changes behind misses the newer ones; dropping the receiver
    /// unsubscribes.
    pub fn subscribe_status(&self) -> Receiver<StreamStatus> {
        let (sender, receiver) = crossbeam_channel::bounded(self.shared.queue_capacity);
        self.shared.subscribers.lock().statuses.push(sender);
        receiver
    }

    /// Changes the reconnect interval, also while running. A reader already
    /// waiting finishes its current wait.
    pub fn set_reconnect_interval(&self, interval: Duration) {
        self.shared
            .reconnect_interval_ms
            .store(duration_ms(interval), Ordering::Relaxed);
    }

    /// The reconnect interval in force.
    pub fn reconnect_interval(&self) -> Duration {
        self.shared.reconnect_interval()
    }

    /// Whether the listener has been started, and neither stopped nor ended
    /// (every endpoint finished or failed for good).
    pub fn is_running(&self) -> bool {
        self.run
            .lock()
            .as_ref()
            .is_some_and(|run| !run.ended.load(Ordering::Acquire))
    }

    /// The state and counters of each endpoint's reader, ordered by endpoint
    /// id. After [`stop`](Self::stop), the statuses as the run ended.
    pub fn status(&self) -> Vec<StreamStatus> {
        match &*self.run.lock() {
            Some(run) => snapshot(&run.readers),
            None => self.last_status.lock().clone(),
        }
    }

    /// Opens one event stream per endpoint, all at once, on threads of their
    /// own. Does nothing when already running; after a run has ended on its
    /// own (every endpoint finished or failed), starts a new one.
    ///
    /// Following every endpoint, the endpoint list is read first; endpoints
    /// without a Docker API (Azure, Kubernetes) are skipped with a log line.
    /// Errors: reading the endpoint list failed, or a thread could not be
    /// spawned.
    pub fn start(&self) -> Result<(), Error> {
        let _lifecycle = self.lifecycle.lock();
        let ended = match &*self.run.lock() {
            Some(run) if !run.ended.load(Ordering::Acquire) => return Ok(()),
            Some(_) => true,
            None => false,
        };
        if ended {
            let old = self.run.lock().take();
            if let Some(old) = old {
                self.finish(old);
            }
        }
        let cancel = Arc::new(Cancel::default());
        *self.starting.lock() = Some(cancel.clone());
        let endpoints = self.endpoint_ids(cancel);
        *self.starting.lock() = None;
        let started = self.spawn_run(&endpoints?)?;
        *self.run.lock() = Some(started);
        Ok(())
    }

    fn endpoint_ids(&self, cancel: Arc<Cancel>) -> Result<Vec<u64>, Error> {
        if let Some(id) = self.shared.endpoint {
            return Ok(vec![id]);
        }
        let mut ids = Vec::new();
        for endpoint in self.shared.client.endpoints_cancellable(cancel)? {
            if endpoint.has_docker_api() {
                ids.push(endpoint.id);
            } else {
                log::info!(
                    "skipping endpoint {} ({:?}): it has no Docker API ({:?})",
                    endpoint.id,
                    endpoint.name,
                    endpoint.kind
                );
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn spawn_run(&self, endpoints: &[u64]) -> Result<Run, Error> {
        let generation = self.shared.subscribers.lock().generation;
        let stopping = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(AtomicBool::new(false));
        let (stop_sender, stop_receiver) = crossbeam_channel::bounded::<()>(0);
        // Unbounded in batches, bounded in events by `queued`.
        let (event_sender, event_receiver) = crossbeam_channel::unbounded();
        let (pool_sender, pool_receiver) = crossbeam_channel::bounded(handoff::POOLED);
        let queued = Arc::new(AtomicUsize::new(0));

        let dispatcher = Dispatcher {
            generation,
            ended: ended.clone(),
            shared: self.shared.clone(),
            events: event_receiver,
            pool: pool_sender,
            queued: queued.clone(),
            stop: stop_receiver.clone(),
            stopping: stopping.clone(),
        };
        let dispatcher = spawn_with("portainer dispatcher".into(), None, move || {
            dispatcher.run()
        })?;
        let mut run = Run {
            generation,
            stopping,
            ended,
            stop: Some(stop_sender),
            readers: Arc::new(Mutex::new(BTreeMap::new())),
            refresher: None,
            dispatcher_thread: dispatcher.thread().id(),
            dispatcher: Some(dispatcher),
        };

        let refresh = match (self.shared.endpoint, self.shared.query.until_time()) {
            (None, None) => self.shared.endpoint_refresh,
            _ => None,
        };
        let (ended_sender, ended_receiver) = crossbeam_channel::unbounded();
        let context = RunContext {
            generation,
            shared: self.shared.clone(),
            events: event_sender,
            pool: pool_receiver,
            queued,
            ended: refresh.map(|_| ended_sender),
        };
        for &endpoint_id in endpoints {
            match context.spawn_reader(endpoint_id) {
                Ok(handle) => {
                    run.readers.lock().insert(endpoint_id, handle);
                }
                Err(err) => {
                    self.finish(run);
                    return Err(err);
                }
            }
        }
        if let Some(interval) = refresh {
            let cancel = Arc::new(Cancel::default());
            let refresher = Refresher {
                context,
                readers: run.readers.clone(),
                interval,
                cancel: cancel.clone(),
                stop: stop_receiver,
                ended: ended_receiver,
            };
            match spawn("portainer endpoints".into(), move || refresher.run()) {
                Ok(thread) => run.refresher = Some((cancel, thread)),
                Err(err) => {
                    self.finish(run);
                    return Err(err);
                }
            }
        }
        Ok(run)
    }

    /// Ends every connection and thread, then returns. Safe to call twice,
    /// from several threads at once, and from inside a callback.
    ///
    /// Readers waiting for events or for their next attempt stop at once:
    /// their sockets are shut down and their waits woken. A reader still
    /// connecting finishes its connect first (bounded by the client's
    /// timeout), and a callback under way finishes its call. After `stop`
    /// returns no callback starts, every subscriber's receiver is
    /// disconnected and no thread of the listener is left; a `stop` racing
    /// another waits for it to finish.
    ///
    /// Called from a callback, it returns without waiting for that callback
    /// to finish; if another thread is starting or stopping the listener at
    /// that moment, it leaves the listener to that thread and returns.
    pub fn stop(&self) {
        if let Some(cancel) = &*self.starting.lock() {
            cancel.cancel();
        }
        let _lifecycle = if ON_DISPATCHER.with(Cell::get) {
            // Another thread's stop may hold the lock while it waits for the
            // very callback this runs in.
            match self.lifecycle.try_lock() {
                Some(guard) => guard,
                None => return,
            }
        } else {
            self.lifecycle.lock()
        };
        let run = self.run.lock().take();
        if let Some(run) = run {
            self.finish(run);
        }
    }

    fn finish(&self, mut run: Run) {
        run.stopping.store(true, Ordering::Release);
        // Disconnect this run's subscribers first: anyone subscribing from
        // now on belongs to the next run, even while this one winds down.
        self.shared.close_run(run.generation);
        drop(run.stop.take());
        if let Some((cancel, refresher)) = run.refresher.take() {
            cancel.cancel();
            if refresher.join().is_err() {
                log::error!("the endpoint refresher thread panicked");
            }
        }
        let mut readers = std::mem::take(&mut *run.readers.lock());
        // Signal all first so they wind down together, then wait for each.
        for reader in readers.values_mut() {
            reader.signal();
        }
        for reader in readers.values_mut() {
            reader.join();
        }
        if let Some(dispatcher) = run.dispatcher.take() {
            if thread::current().id() != run.dispatcher_thread && dispatcher.join().is_err() {
                log::error!("the dispatcher thread panicked");
            }
        }
        *self.last_status.lock() = readers
            .values()
            .map(|reader| reader.status.snapshot())
            .collect();
    }
}

/// The current status of every reader, by endpoint id.
fn snapshot(readers: &Readers) -> Vec<StreamStatus> {
    readers
        .lock()
        .values()
        .map(|reader| reader.status.snapshot())
        .collect()
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The stack of a reader or refresher thread. Parsing, HTTP and TLS need far
/// less; a small reservation keeps a listener of a thousand endpoints light.
/// The dispatcher, which runs the callbacks, keeps the platform's default.
const WORKER_STACK: usize = 256 * 1024;

fn spawn(name: String, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, Error> {
    spawn_with(name, Some(WORKER_STACK), body)
}

fn spawn_with(
    name: String,
    stack: Option<usize>,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, Error> {
    let builder = thread::Builder::new().name(name.clone());
    let builder = match stack {
        Some(bytes) => builder.stack_size(bytes),
        None => builder,
    };
    builder
        .spawn(body)
        .map_err(|err| Error::Config(format!("could not spawn thread {name:?}: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> Listener {
        Listener::builder(Client::new("http://127.0.0.1:9", "k").unwrap()).build()
    }

    fn on_event(_: &ListenerResult) {}

    #[test]
    fn the_same_function_registers_once() {
        let listener = listener();
        let first = listener.register_callback(on_event);
        assert_eq!(listener.register_callback(on_event), first);
        let counter = Arc::new(AtomicU64::new(0));
        let captured = counter.clone();
        let other = listener.register_callback(move |_| {
            captured.fetch_add(1, Ordering::Relaxed);
        });
        assert_ne!(other, first);
        assert_eq!(listener.shared.callbacks.read().len(), 2);
        assert!(listener.unregister_callback(first));
        assert!(!listener.unregister_callback(first));
        assert_eq!(listener.shared.callbacks.read().len(), 1);
    }

    #[test]
    fn public_handles_are_thread_safe() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Listener>();
        assert_send_sync::<Client>();
        assert_send_sync::<ListenerResult>();
    }
}
