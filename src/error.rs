//! The crate's one error type.

use std::fmt;
use std::io;

/// Everything that can go wrong talking to Portainer or reading its event stream.
///
/// Server replies keep the HTTP status and Portainer's `message` (or a short
/// excerpt of the body when it is not Portainer's JSON). No variant ever holds
/// the API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered 401: the API key is wrong, expired or revoked.
    /// Portainer may say "Invalid JWT token" even for an API key.
    #[error("authentication failed (HTTP 401): {message}")]
    Unauthorized {
        /// Portainer's message, or an excerpt of the body.
        message: String,
    },

    /// The server answered 403: the key is valid but may not use this resource.
    #[error("forbidden (HTTP 403): {message}")]
    Forbidden {
        /// Portainer's message, or an excerpt of the body.
        message: String,
    },

    /// The server answered 404, usually because the endpoint does not exist
    /// (any more).
    #[error("not found (HTTP 404): {message}")]
    NotFound {
        /// Portainer's message, or an excerpt of the body.
        message: String,
    },

    /// Any other status that is not a success, 5xx included.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// Portainer's message, or an excerpt of the body (empty when the body was).
        message: String,
    },

    /// A success status whose body is not an event stream or JSON, such as the
    /// HTML page a proxy serves in front of a missing backend.
    #[error("unexpected response ({content_type}): {excerpt}")]
    UnexpectedResponse {
        /// The `Content-Type` the server sent (empty when it sent none).
        content_type: String,
        /// The start of the body.
        excerpt: String,
    },

    /// The connection could not be made, or broke while in use.
    #[error("connection error: {source}")]
    Connection {
        /// What the network layer reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// TLS failed: most often the server's certificate is not trusted (see
    /// [`ClientBuilder::ca_file`](crate::ClientBuilder::ca_file)), or the
    /// server refused the client certificate. Retried like a connection
    /// error, since a certificate can be renewed.
    #[error("TLS failed: {source}")]
    Tls {
        /// What the TLS layer reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A phase of a request took longer than its timeout.
    #[error("timed out: {phase}")]
    Timeout {
        /// Which phase timed out (connect, response headers, whole call, ...).
        phase: String,
    },

    /// A line or a body could not be decoded as the JSON that was expected.
    #[error("malformed JSON ({reason}) in {excerpt:?}")]
    Decode {
        /// What the JSON parser said.
        reason: String,
        /// The start of the offending line or body.
        excerpt: String,
    },

    /// The stream sent a line longer than the maximum line length. The line
    /// was discarded up to its newline.
    #[error("line of {length} bytes exceeds the limit of {limit} bytes; discarded")]
    LineTooLong {
        /// The configured limit in bytes.
        limit: usize,
        /// How many bytes the line had when it ended (or when the stream did).
        length: usize,
    },

    /// The stream ended in the middle of a line: the partial event is dropped.
    #[error("stream ended inside an event ({length} bytes without a newline)")]
    Truncated {
        /// How many bytes of the partial line arrived.
        length: usize,
    },

    /// The URL given to the client cannot be used.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (without any credentials it held).
        url: String,
        /// Why it was refused.
        reason: String,
    },

    /// A setting or argument cannot be used, such as `recent_events` without
    /// `since`, or a thread that could not be spawned.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// The HTTP status behind this error, when the server answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Unauthorized { .. } => Some(401),
            Error::Forbidden { .. } => Some(403),
            Error::NotFound { .. } => Some(404),
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether retrying cannot help: bad credentials, no permission, no such
    /// endpoint, or a configuration mistake.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Error::Unauthorized { .. }
                | Error::Forbidden { .. }
                | Error::NotFound { .. }
                | Error::InvalidUrl { .. }
                | Error::Config(_)
        )
    }

    /// Whether this error concerns one line of a stream that goes on after it
    /// (a malformed or overlong line), rather than the stream itself.
    pub fn is_line_error(&self) -> bool {
        matches!(self, Error::Decode { .. } | Error::LineTooLong { .. })
    }

    /// A short label for the kind of failure, used to tell a repeated failure
    /// from a new one when logging.
    pub(crate) fn kind_label(&self) -> String {
        match self.status() {
            Some(status) => format!("HTTP {status}"),
            None => match self {
                Error::UnexpectedResponse { .. } => "unexpected response".into(),
                Error::Connection { .. } => "connection".into(),
                Error::Tls { .. } => "TLS".into(),
                Error::Timeout { .. } => "timeout".into(),
                Error::Truncated { .. } => "truncated".into(),
                _ => "other".into(),
            },
        }
    }

    pub(crate) fn connection(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Connection {
            source: source.into(),
        }
    }

    pub(crate) fn decode(reason: impl fmt::Display, bytes: &[u8]) -> Self {
        Error::Decode {
            reason: reason.to_string(),
            excerpt: excerpt(bytes),
        }
    }
}

impl From<ureq::Error> for Error {
    fn from(err: ureq::Error) -> Self {
        match err {
            ureq::Error::Timeout(phase) => Error::Timeout {
                phase: phase.to_string(),
            },
            ureq::Error::Io(io) => Error::from(io),
            ureq::Error::BadUri(reason) => Error::InvalidUrl {
                url: String::new(),
                reason,
            },
            ureq::Error::Rustls(_) | ureq::Error::Tls(_) | ureq::Error::Pem(_) => Error::Tls {
                source: Box::new(err),
            },
            other => Error::connection(other),
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        // A TLS handshake runs inside the first read or write, so its
        // failure arrives wrapped in an io::Error.
        if err
            .get_ref()
            .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            let inner = err.into_inner().expect("checked above");
            return Error::Tls { source: inner };
        }
        // ureq wraps its own errors in io::Error when they surface through a
        // body reader; unwrap them so a timeout stays a timeout.
        if err.get_ref().is_some_and(|inner| inner.is::<ureq::Error>()) {
            let inner = err.into_inner().expect("checked above");
            let ureq_err = inner.downcast::<ureq::Error>().expect("checked above");
            return Error::from(*ureq_err);
        }
        Error::connection(err)
    }
}

/// The longest excerpt of a body or line kept in an error.
const EXCERPT_LEN: usize = 160;

/// The start of `bytes` as text on one line: whitespace runs (an HTML page's
/// line breaks) become one space, invalid UTF-8 is replaced, and the text is
/// cut on a character boundary.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT_LEN * 4)]);
    let mut words = text.split_whitespace();
    let mut one_line = words.next().unwrap_or("").to_string();
    for word in words {
        one_line.push(' ');
        one_line.push_str(word);
    }
    match one_line.char_indices().nth(EXCERPT_LEN) {
        Some((cut, _)) => format!("{}...", &one_line[..cut]),
        None => one_line,
    }
}

/// The URL with anything before an `@` in its authority hidden.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://<redacted>@{host}{path}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_small_and_thread_safe() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
        assert!(
            std::mem::size_of::<Error>() <= 56,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn excerpt_cuts_long_text_on_a_char_boundary() {
        let long = "é".repeat(500);
        let cut = excerpt(long.as_bytes());
        assert_eq!(cut.chars().count(), EXCERPT_LEN + 3);
        assert!(cut.ends_with("..."));
    }

    #[test]
    fn excerpt_keeps_an_html_page_on_one_line() {
        assert_eq!(
            excerpt(b"<html>\r\n<head><title>502</title></head>\r\n  <body>x</body>\n</html>\n"),
            "<html> <head><title>502</title></head> <body>x</body> </html>"
        );
    }

    #[test]
    fn excerpt_replaces_invalid_utf8() {
        assert_eq!(excerpt(b"ab\xffcd"), "ab\u{fffd}cd");
    }

    #[test]
    fn only_client_side_refusals_are_final() {
        assert!(
            Error::Unauthorized {
                message: String::new()
            }
            .is_final()
        );
        assert!(
            Error::NotFound {
                message: String::new()
            }
            .is_final()
        );
        let bad_gateway = Error::Status {
            status: 502,
            message: String::new(),
        };
        assert!(!bad_gateway.is_final());
        assert_eq!(bad_gateway.status(), Some(502));
    }
}
