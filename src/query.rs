//! What to ask the event stream for: a time window and Docker's filters.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// A point in time with nanosecond precision, as Docker's `since` and `until`
/// take it.
///
/// On the wire it is written `SECONDS.NANOSECONDS` with nine digits, the only
/// form that keeps nanoseconds (`1700000000.5` means half a second to Docker).
/// [`FromStr`] reads Unix seconds with an optional fraction of up to nine
/// digits, the form Docker and its CLI accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    nanos: i64,
}

impl Timestamp {
    /// The time from nanoseconds since the Unix epoch (an event's `timeNano`).
    pub const fn from_unix_nanos(nanos: i64) -> Self {
        Timestamp { nanos }
    }

    /// The time from whole seconds since the Unix epoch.
    pub const fn from_unix_secs(secs: i64) -> Self {
        Timestamp {
            nanos: secs.saturating_mul(NANOS_PER_SEC),
        }
    }

    /// The current time.
    pub fn now() -> Self {
        Timestamp::from(SystemTime::now())
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn unix_nanos(self) -> i64 {
        self.nanos
    }

    /// The time as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        if self.nanos >= 0 {
            UNIX_EPOCH + Duration::from_nanos(self.nanos as u64)
        } else {
            UNIX_EPOCH - Duration::from_nanos(self.nanos.unsigned_abs())
        }
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        let nanos = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |n| -n),
        };
        Timestamp { nanos }
    }
}

/// Writes `SECONDS.NANOSECONDS` with a nine-digit fraction.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.nanos.div_euclid(NANOS_PER_SEC);
        let frac = self.nanos.rem_euclid(NANOS_PER_SEC);
        write!(f, "{secs}.{frac:09}")
    }
}

/// The error from parsing a [`Timestamp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseTimestampError {
    input: String,
}

impl fmt::Display for ParseTimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not Unix seconds with an optional fraction of up to nine digits",
            self.input
        )
    }
}

impl std::error::Error for ParseTimestampError {}

impl FromStr for Timestamp {
    type Err = ParseTimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = || ParseTimestampError { input: s.into() };
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let negative = whole.starts_with('-');
        let digits = whole.strip_prefix('-').unwrap_or(whole);
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if digits.is_empty() || !all_digits(digits) || !all_digits(frac) || frac.len() > 9 {
            return Err(fail());
        }
        let secs: i64 = digits.parse().map_err(|_| fail())?;
        let frac_nanos: i64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<9}").parse().map_err(|_| fail())?
        };
        let magnitude = secs
            .checked_mul(NANOS_PER_SEC)
            .and_then(|n| n.checked_add(frac_nanos))
            .ok_or_else(fail)?;
        Ok(Timestamp {
            nanos: if negative { -magnitude } else { magnitude },
        })
    }
}

/// Docker's event filters, sent as the JSON `filters` query parameter.
///
/// Each key may hold several values; Docker keeps an event when it matches any
/// value of every key given. The named methods cover every key Docker takes;
/// [`EventFilters::add`] takes any other.
///
/// ```
/// use portainer::EventFilters;
///
/// let filters = EventFilters::new()
///     .event_type("container")
///     .event("start")
///     .event("die")
///     .label("com.example.role=web");
/// assert_eq!(
///     filters.to_json(),
///     r#"{"event":["start","die"],"label":["com.example.role=web"],"type":["container"]}"#
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilters {
    filters: BTreeMap<String, Vec<String>>,
}

macro_rules! filter_methods {
    ($($(#[$doc:meta])* $method:ident => $key:literal;)*) => {
        $(
            $(#[$doc])*
            pub fn $method(self, value: impl Into<String>) -> Self {
                self.add($key, value)
            }
        )*
    };
}

impl EventFilters {
    /// No filters: every event.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` under `key`. Adding the same pair twice keeps one.
    pub fn add(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let values = self.filters.entry(key.into()).or_default();
        let value = value.into();
        if !values.contains(&value) {
            values.push(value);
        }
        self
    }

    filter_methods! {
        /// Keeps events about this kind of object (`type`): `container`,
        /// `image`, `volume`, `network`, `daemon`, `plugin`, `node`,
        /// `service`, `secret` or `config`.
        event_type => "type";
        /// Keeps events with this action (`event`), such as `start` or `die`.
        event => "event";
        /// Keeps events about this container, by name or id.
        container => "container";
        /// Keeps events about this image, by name or id.
        image => "image";
        /// Keeps events whose actor has this label (`key` or `key=value`).
        label => "label";
        /// Keeps events about this volume.
        volume => "volume";
        /// Keeps events about this network, by name or id.
        network => "network";
        /// Keeps events from this daemon, by name or id.
        daemon => "daemon";
        /// Keeps events about this plugin, by name or id.
        plugin => "plugin";
        /// Keeps events about this swarm node.
        node => "node";
        /// Keeps events about this swarm service.
        service => "service";
        /// Keeps events about this swarm secret.
        secret => "secret";
        /// Keeps events about this swarm config.
        config => "config";
        /// Keeps events of this scope: `local` or `swarm`.
        scope => "scope";
    }

    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// The values set for `key`.
    pub fn get(&self, key: &str) -> &[String] {
        self.filters.get(key).map_or(&[], Vec::as_slice)
    }

    /// The filters as Docker's JSON: `{"key":["value",...]}`.
    pub fn to_json(&self) -> String {
        // A map of strings to lists of strings always serialises.
        serde_json::to_string(&self.filters).expect("string map serialises")
    }
}

/// What [`Client::events`](crate::Client::events) and
/// [`Client::recent_events`](crate::Client::recent_events) ask for.
///
/// ```
/// use portainer::{EventFilters, EventQuery, Timestamp};
///
/// let query = EventQuery::new()
///     .since(Timestamp::from_unix_secs(1_700_000_000))
///     .filters(EventFilters::new().event_type("container"));
/// assert!(query.until_time().is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    filters: EventFilters,
}

impl EventQuery {
    /// Every event from now on, unfiltered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replays events from this time on (inclusive) before live ones. The
    /// daemon keeps only its last 256 events.
    pub fn since(mut self, time: impl Into<Timestamp>) -> Self {
        self.since = Some(time.into());
        self
    }

    /// Ends the stream at this time: the daemon closes it then.
    pub fn until(mut self, time: impl Into<Timestamp>) -> Self {
        self.until = Some(time.into());
        self
    }

    /// Sets Docker's filters.
    pub fn filters(mut self, filters: EventFilters) -> Self {
        self.filters = filters;
        self
    }

    /// The `since` time, if set.
    pub fn since_time(&self) -> Option<Timestamp> {
        self.since
    }

    /// The `until` time, if set.
    pub fn until_time(&self) -> Option<Timestamp> {
        self.until
    }

    /// The filters.
    pub fn filter_set(&self) -> &EventFilters {
        &self.filters
    }

    /// The query parameters this query sends, in order.
    pub(crate) fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = Vec::with_capacity(3);
        if let Some(since) = self.since {
            params.push(("since", since.to_string()));
        }
        if let Some(until) = self.until {
            params.push(("until", until.to_string()));
        }
        if !self.filters.is_empty() {
            params.push(("filters", self.filters.to_json()));
        }
        params
    }

    pub(crate) fn with_since(&self, since: Option<Timestamp>) -> Self {
        EventQuery {
            since,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_keeps_nine_digits() {
        let t = Timestamp::from_unix_nanos(1_700_000_000_123_000_000);
        assert_eq!(t.to_string(), "1700000000.123000000");
        assert_eq!(Timestamp::from_unix_nanos(5).to_string(), "0.000000005");
        assert_eq!(Timestamp::from_unix_nanos(-1).to_string(), "-1.999999999");
    }

    #[test]
    fn parses_seconds_with_fraction() {
        let t: Timestamp = "1700000000.5".parse().unwrap();
        assert_eq!(t.unix_nanos(), 1_700_000_000_500_000_000);
        let t: Timestamp = "1700000000".parse().unwrap();
        assert_eq!(t, Timestamp::from_unix_secs(1_700_000_000));
        let t: Timestamp = "1700000000.000000001".parse().unwrap();
        assert_eq!(t.to_string(), "1700000000.000000001");
        for bad in [
            "",
            ".5",
            "1.2.3",
            "abc",
            "1.0000000001",
            "1e9",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn system_time_round_trip() {
        let now = SystemTime::now();
        assert_eq!(Timestamp::from(now).to_system_time(), now);
    }

    #[test]
    fn params_in_order() {
        let query = EventQuery::new()
            .since(Timestamp::from_unix_nanos(1))
            .until(Timestamp::from_unix_secs(2))
            .filters(
                EventFilters::new()
                    .event_type("container")
                    .event_type("container"),
            );
        assert_eq!(
            query.params(),
            vec![
                ("since", "0.000000001".to_string()),
                ("until", "2.000000000".to_string()),
                ("filters", r#"{"type":["container"]}"#.to_string()),
            ]
        );
    }
}
