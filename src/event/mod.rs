//! The event model: one Docker event as the daemon reports it.
//!
//! An event keeps all its text in one shared string and points into it,
//! instead of holding a string per field and per attribute. A realistic event
//! has some twenty strings; storing them apart cost as many allocations on the
//! reader thread and as many frees on whichever thread dropped the event last,
//! and that traffic (the allocator's locks, above all) limited the listener
//! more than parsing did. Now an event is one allocation, cloning it is cheap,
//! and the accessors give the view a struct of `Option<String>` would.
//! Parsing, and the packed form the listener's readers hand over, are in
//! [`packed`].

mod packed;

use std::fmt;
use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

pub(crate) use self::packed::Packed;

/// Where one string lives in an event's text; `NONE` when it is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    const NONE: Span = Span {
        start: u32::MAX,
        len: 0,
    };

    fn is_none(self) -> bool {
        self.start == u32::MAX
    }
}

/// The optional text fields, in the order of [`DockerEvent::fields`].
const KIND: usize = 0;
const ACTION: usize = 1;
const SCOPE: usize = 2;
const STATUS: usize = 3;
const ID: usize = 4;
const FROM: usize = 5;
const ACTOR_ID: usize = 6;
const FIELDS: usize = 7;

/// Attributes kept beside the event rather than in an allocation of their
/// own; a container with a compose project's labels has about a dozen.
const INLINE_ATTRIBUTES: usize = 16;

/// One event from a Docker daemon's `/events` stream.
///
/// Every field is optional, because daemons of different ages send different
/// subsets; unknown fields are ignored. Serialising gives back Docker's own
/// field names (`Type`, `Action`, `Actor`, `scope`, `time`, `timeNano`, and the
/// legacy `status`, `id`, `from`), leaving out the fields that are absent.
/// Attributes come out sorted by key, as Docker writes them.
///
/// The event stores its text compactly (see the module notes); read it
/// through the accessors:
///
/// ```
/// use portainer::DockerEvent;
///
/// let event = DockerEvent::from_json(
///     br#"{"Type":"container","Action":"die","Actor":{"ID":"ca03","Attributes":{"exitCode":"3","name":"web1"}},"time":1796300697,"timeNano":1796300697806257370}"#,
/// )?;
/// assert_eq!(event.kind(), Some("container"));
/// assert_eq!(event.action(), Some("die"));
/// assert_eq!(event.attribute("exitCode"), Some("3"));
/// assert_eq!(event.actor().unwrap().attributes().count(), 2);
/// assert_eq!(event.timestamp_nanos(), Some(1796300697806257370));
/// # Ok::<(), portainer::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DockerEvent {
    text: Arc<str>,
    fields: [Span; FIELDS],
    /// Key and value of each attribute, sorted by key.
    attributes: SmallVec<[(Span, Span); INLINE_ATTRIBUTES]>,
    has_actor: bool,
    time: Option<i64>,
    time_nano: Option<i64>,
}

impl Default for Span {
    fn default() -> Self {
        Span::NONE
    }
}

/// The string `span` points at in `text`.
fn span_text(text: &str, span: Span) -> Option<&str> {
    if span.is_none() {
        return None;
    }
    let start = span.start as usize;
    text.get(start..start + span.len as usize)
}

/// `timeNano` when present, otherwise `time` in whole seconds.
fn timestamp_nanos(time: Option<i64>, time_nano: Option<i64>) -> Option<i64> {
    time_nano.or_else(|| time.and_then(|secs| secs.checked_mul(1_000_000_000)))
}

/// What tells an event from the others of its nanosecond: its type, action
/// (or legacy status) and actor (or legacy id). Used to recognise the events
/// a resumed stream replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventKey<'a> {
    pub(crate) time_nanos: Option<i64>,
    pub(crate) kind: Option<&'a str>,
    pub(crate) action: Option<&'a str>,
    pub(crate) actor: Option<&'a str>,
}

impl<'a> EventKey<'a> {
    fn new(
        text: &'a str,
        fields: &[Span; FIELDS],
        time: Option<i64>,
        time_nano: Option<i64>,
    ) -> Self {
        let field = |index: usize| span_text(text, fields[index]);
        EventKey {
            time_nanos: timestamp_nanos(time, time_nano),
            kind: field(KIND),
            action: field(ACTION).or(field(STATUS)),
            actor: field(ACTOR_ID).or(field(ID)),
        }
    }

    /// The type, action and actor, in that order.
    pub(crate) fn parts(&self) -> [Option<&'a str>; 3] {
        [self.kind, self.action, self.actor]
    }
}

impl DockerEvent {
    /// Parses one line of the event stream.
    pub fn from_json(line: &[u8]) -> Result<Self, crate::Error> {
        packed::from_json(line)
    }

    fn text(&self, span: Span) -> Option<&str> {
        span_text(&self.text, span)
    }

    /// What tells this event from the others of its nanosecond.
    #[cfg(test)]
    pub(crate) fn key(&self) -> EventKey<'_> {
        EventKey::new(&self.text, &self.fields, self.time, self.time_nano)
    }

    fn field(&self, index: usize) -> Option<&str> {
        self.text(self.fields[index])
    }

    /// The kind of object (`Type`): `container`, `image`, `volume`,
    /// `network`, `daemon`, `plugin`, `node`, `service`, `secret`, `config`.
    pub fn kind(&self) -> Option<&str> {
        self.field(KIND)
    }

    /// What happened (`Action`), as the daemon wrote it. Some actions carry
    /// text after a colon (`exec_start: /bin/sh -c true`, `health_status:
    /// healthy`); see [`action_name`](Self::action_name) and
    /// [`action_detail`](Self::action_detail).
    pub fn action(&self) -> Option<&str> {
        self.field(ACTION)
    }

    /// `local` or `swarm`.
    pub fn scope(&self) -> Option<&str> {
        self.field(SCOPE)
    }

    /// Unix time of the event, in seconds.
    pub fn time(&self) -> Option<i64> {
        self.time
    }

    /// Unix time of the event, in nanoseconds (`timeNano`).
    pub fn time_nano(&self) -> Option<i64> {
        self.time_nano
    }

    /// Legacy: the action, sent for container and image events by daemons
    /// older than API 1.52.
    pub fn status(&self) -> Option<&str> {
        self.field(STATUS)
    }

    /// Legacy: the actor's id, sent by daemons older than API 1.52.
    pub fn id(&self) -> Option<&str> {
        self.field(ID)
    }

    /// Legacy: the container's image, sent by daemons older than API 1.52.
    pub fn from(&self) -> Option<&str> {
        self.field(FROM)
    }

    /// The object the event is about, when the daemon named one.
    pub fn actor(&self) -> Option<DockerEventActor<'_>> {
        self.has_actor.then_some(DockerEventActor { event: self })
    }

    /// The time of the event in nanoseconds since the Unix epoch: `timeNano`
    /// when present, otherwise `time` in whole seconds.
    pub fn timestamp_nanos(&self) -> Option<i64> {
        timestamp_nanos(self.time, self.time_nano)
    }

    /// The action, or the legacy `status` when an old daemon sent no action.
    pub fn action_or_status(&self) -> Option<&str> {
        self.action().or(self.status())
    }

    /// The action without any text after a colon: `exec_start` for
    /// `exec_start: /bin/sh -c true`.
    pub fn action_name(&self) -> Option<&str> {
        let action = self.action_or_status()?;
        Some(
            action
                .split_once(':')
                .map_or(action, |(name, _)| name)
                .trim(),
        )
    }

    /// The text after the colon of an action, if any: `healthy` for
    /// `health_status: healthy`.
    pub fn action_detail(&self) -> Option<&str> {
        let action = self.action_or_status()?;
        action.split_once(':').map(|(_, detail)| detail.trim())
    }

    /// The actor's id, falling back to the legacy `id` field.
    pub fn actor_id(&self) -> Option<&str> {
        self.field(ACTOR_ID).or(self.id())
    }

    /// One of the actor's attributes, such as `name` or `exitCode`.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        let found = self
            .attributes
            .binary_search_by(|(k, _)| self.text(*k).unwrap_or("").cmp(key))
            .ok()?;
        self.text(self.attributes[found].1)
    }
}

/// The object a [`DockerEvent`] is about; borrowed from the event by
/// [`DockerEvent::actor`].
#[derive(Clone, Copy)]
pub struct DockerEventActor<'a> {
    event: &'a DockerEvent,
}

impl<'a> DockerEventActor<'a> {
    /// The object's id (a container id, a volume name, ...).
    pub fn id(&self) -> Option<&'a str> {
        self.event.field(ACTOR_ID)
    }

    /// One attribute by key.
    pub fn attribute(&self, key: &str) -> Option<&'a str> {
        self.event.attribute(key)
    }

    /// Every attribute (labels, `name`, `image`, `exitCode`, ...), sorted by
    /// key. A `null` from the daemon reads as none.
    pub fn attributes(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + 'a {
        let event = self.event;
        event.attributes.iter().map(move |(key, value)| {
            (
                event.text(*key).unwrap_or(""),
                event.text(*value).unwrap_or(""),
            )
        })
    }
}

impl fmt::Debug for DockerEventActor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerEventActor")
            .field("id", &self.id())
            .field("attributes", &AttributesDebug(*self))
            .finish()
    }
}

struct AttributesDebug<'a>(DockerEventActor<'a>);

impl fmt::Debug for AttributesDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.attributes()).finish()
    }
}

impl fmt::Debug for DockerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerEvent")
            .field("kind", &self.kind())
            .field("action", &self.action())
            .field("actor", &self.actor())
            .field("scope", &self.scope())
            .field("time", &self.time)
            .field("time_nano", &self.time_nano)
            .field("status", &self.status())
            .field("id", &self.id())
            .field("from", &self.from())
            .finish()
    }
}

impl<'de> Deserialize<'de> for DockerEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        packed::deserialize(deserializer)
    }
}

impl Serialize for DockerEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        let texts = [
            ("Type", self.kind()),
            ("Action", self.action()),
            ("scope", self.scope()),
            ("status", self.status()),
            ("id", self.id()),
            ("from", self.from()),
        ];
        for (name, value) in texts {
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        if let Some(actor) = self.actor() {
            map.serialize_entry("Actor", &ActorJson(actor))?;
        }
        if let Some(time) = self.time {
            map.serialize_entry("time", &time)?;
        }
        if let Some(time_nano) = self.time_nano {
            map.serialize_entry("timeNano", &time_nano)?;
        }
        map.end()
    }
}

struct ActorJson<'a>(DockerEventActor<'a>);

impl Serialize for ActorJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(id) = self.0.id() {
            map.serialize_entry("ID", id)?;
        }
        map.serialize_entry("Attributes", &AttributesJson(self.0))?;
        map.end()
    }
}

struct AttributesJson<'a>(DockerEventActor<'a>);

impl Serialize for AttributesJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.attributes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> DockerEvent {
        DockerEvent::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn null_attributes_and_missing_actor_are_accepted() {
        let event =
            parse(r#"{"Type":"container","Action":"start","Actor":{"ID":"ab","Attributes":null}}"#);
        assert_eq!(event.actor_id(), Some("ab"));
        assert_eq!(event.actor().unwrap().attributes().len(), 0);

        let bare = parse(r#"{"Type":"daemon","time":5}"#);
        assert!(bare.actor().is_none());
        assert_eq!(bare.timestamp_nanos(), Some(5_000_000_000));
    }

    #[test]
    fn time_nano_wins_over_time_and_is_never_added_to_it() {
        let event = parse(r#"{"time":1700000000,"timeNano":1700000000000000123}"#);
        assert_eq!(event.timestamp_nanos(), Some(1_700_000_000_000_000_123));
    }

    #[test]
    fn action_parts() {
        let event = parse(r#"{"Action":"exec_create: /bin/sh -c true"}"#);
        assert_eq!(event.action_name(), Some("exec_create"));
        assert_eq!(event.action_detail(), Some("/bin/sh -c true"));

        let plain = parse(r#"{"status":"die"}"#);
        assert_eq!(plain.action_name(), Some("die"));
        assert_eq!(plain.action_detail(), None);
    }

    #[test]
    fn unknown_fields_are_ignored_and_bad_json_is_an_error() {
        assert!(DockerEvent::from_json(br#"{"Type":"x","NewField":[1,2]}"#).is_ok());
        let err = DockerEvent::from_json(b"<html>").unwrap_err();
        assert!(matches!(err, crate::Error::Decode { ref excerpt, .. } if excerpt == "<html>"));
    }

    #[test]
    fn escaped_unsorted_and_repeated_attributes() {
        let event = parse(
            r#"{"Actor":{"ID":"a\"b","Attributes":{"z":"1","a":"x\ny","z":"2","m":"\u00e9"}}}"#,
        );
        assert_eq!(event.actor_id(), Some("a\"b"));
        let pairs: Vec<(&str, &str)> = event.actor().unwrap().attributes().collect();
        assert_eq!(pairs, [("a", "x\ny"), ("m", "é"), ("z", "2")]);
        assert_eq!(event.attribute("z"), Some("2"));
        assert_eq!(event.attribute("missing"), None);
    }

    #[test]
    fn an_empty_string_is_present_and_an_absent_field_is_not() {
        let event = parse(r#"{"Type":"","Actor":{}}"#);
        assert_eq!(event.kind(), Some(""));
        assert_eq!(event.action(), None);
        assert_eq!(event.actor().unwrap().id(), None);
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(json, r#"{"Type":"","Actor":{"Attributes":{}}}"#);
    }

    #[test]
    fn the_default_event_is_empty() {
        let event = DockerEvent::default();
        assert_eq!(event.kind(), None);
        assert!(event.actor().is_none());
        assert_eq!(serde_json::to_string(&event).unwrap(), "{}");
    }
}
