//! The event stream: a blocking iterator over one endpoint's events.

use std::fmt;
use std::io::Read;
use std::iter::FusedIterator;
use std::sync::Arc;

use crate::error::Error;
use crate::event::DockerEvent;
use crate::lines::{Line, LineReader};
use crate::transport::Cancel;

/// A blocking iterator over the events of one endpoint, made by
/// [`Client::events`](crate::Client::events).
///
/// `next` blocks until the daemon sends an event, which may take hours on a
/// quiet host. It returns:
///
/// - `Some(Ok(event))` for each event, in the daemon's order;
/// - `Some(Err(_))` for a line that is not an event ([`Error::Decode`]) or is
///   longer than the limit ([`Error::LineTooLong`]): the stream goes on after it;
/// - `Some(Err(_))` once when the connection breaks, or when it ends inside
///   an event ([`Error::Truncated`]); then `None` for ever (a last event
///   complete but for its newline is still delivered);
/// - `None` when the daemon ends the stream (with `until`), or after
///   [`StreamCanceller::cancel`].
///
/// Dropping the stream closes its connection.
pub struct EventStream {
    lines: LineReader<Box<dyn Read + Send>>,
    cancel: Arc<Cancel>,
    done: bool,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    pub(crate) fn new(
        body: impl Read + Send + 'static,
        cancel: Arc<Cancel>,
        max_line: usize,
    ) -> Self {
        EventStream {
            lines: LineReader::new(Box::new(body), max_line),
            cancel,
            done: false,
        }
    }

    /// Reads events from any byte stream with one JSON event per line, such
    /// as a saved `docker events --format '{{json .}}'` or an HTTP body
    /// already de-chunked, with the same rules as a live stream. Lines
    /// longer than `max_line_length` bytes are reported and skipped.
    ///
    /// ```
    /// use portainer::EventStream;
    ///
    /// let input = b"{\"Type\":\"container\",\"Action\":\"start\"}\r\n\r\n{\"Type\":\"image\"}\n";
    /// let kinds: Vec<String> = EventStream::from_reader(&input[..], 1024)
    ///     .map(|event| event.unwrap().kind().unwrap().to_string())
    ///     .collect();
    /// assert_eq!(kinds, ["container", "image"]);
    /// ```
    pub fn from_reader(reader: impl Read + Send + 'static, max_line_length: usize) -> Self {
        EventStream::new(reader, Arc::new(Cancel::default()), max_line_length)
    }

    /// A handle that ends this stream from another thread, even while `next`
    /// is blocked waiting for an event.
    pub fn canceller(&self) -> StreamCanceller {
        StreamCanceller {
            cancel: self.cancel.clone(),
        }
    }
}

impl EventStream {
    /// The next line, given to `parse`, by the rules of [`next`](Iterator::next):
    /// `None` at the end, and a broken stream reported once.
    pub(crate) fn next_with<T>(
        &mut self,
        parse: impl FnOnce(&[u8]) -> Result<T, Error>,
    ) -> Option<Result<T, Error>> {
        if self.done {
            return None;
        }
        let item = match self.lines.next_line() {
            Ok(Some(Line::Complete(bytes))) => return Some(parse(bytes)),
            Ok(Some(Line::TooLong { length })) => {
                return Some(Err(Error::LineTooLong {
                    limit: self.lines.max_line(),
                    length,
                }));
            }
            // A last line without its newline counts when it is a whole event.
            Ok(Some(Line::Unterminated(bytes))) => {
                Some(parse(bytes).map_err(|_| Error::Truncated {
                    length: bytes.len(),
                }))
            }
            Ok(None) => None,
            Err(err) => Some(Err(Error::from(err))),
        };
        self.done = true;
        self.cancel.release();
        if self.cancel.is_cancelled() {
            return None;
        }
        item
    }
}

impl Iterator for EventStream {
    type Item = Result<DockerEvent, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_with(DockerEvent::from_json)
    }
}

impl FusedIterator for EventStream {}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.cancel.release();
    }
}

/// Ends an [`EventStream`] from any thread; made by [`EventStream::canceller`].
#[derive(Debug, Clone)]
pub struct StreamCanceller {
    cancel: Arc<Cancel>,
}

impl StreamCanceller {
    /// Shuts down the stream's connection. A `next` blocked on it returns
    /// `None` promptly, and so does every later call.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}
