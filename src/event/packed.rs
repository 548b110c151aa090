//! Parsing: a line of JSON into an event's packed form.
//!
//! serde_json reads a line into fields that borrow from it; their text is
//! then copied, one string after another, into a buffer, with a [`Span`]
//! saying where each went. A [`Packed`] holds any number of events packed
//! that way, back to back, and keeps its buffers from one use to the next.
//!
//! A listener's reader parses into a `Packed` and hands the whole of it to
//! the dispatcher, which makes each entry a [`DockerEvent`]. The event's own
//! allocation, and its free on whichever thread drops it last, are then the
//! dispatcher's business: the reader, the busier thread, allocates nothing
//! per event and never meets another thread in the allocator.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::mem::size_of;
use std::ops::Range;
use std::sync::Arc;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use smallvec::SmallVec;

use super::{DockerEvent, EventKey, FIELDS, INLINE_ATTRIBUTES, Span};

/// Events parsed and packed back to back, not yet [`DockerEvent`]s.
#[derive(Debug, Default)]
pub(crate) struct Packed {
    /// The strings of every event, one event after another.
    text: String,
    /// The attribute spans of every event, one event after another.
    attributes: Vec<(Span, Span)>,
    entries: Vec<Entry>,
}

/// One event of a [`Packed`]. Its spans count from the start of its own text,
/// so that text can be copied out as it is.
#[derive(Debug)]
struct Entry {
    text: Range<usize>,
    attributes: Range<usize>,
    fields: [Span; FIELDS],
    has_actor: bool,
    time: Option<i64>,
    time_nano: Option<i64>,
}

impl Packed {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether its buffers have no room at all: new, or emptied by `take`.
    pub(crate) fn is_unallocated(&self) -> bool {
        self.text.capacity() == 0 && self.entries.capacity() == 0
    }

    /// The bytes its buffers hold room for.
    pub(crate) fn footprint(&self) -> usize {
        self.text.capacity()
            + self.attributes.capacity() * size_of::<(Span, Span)>()
            + self.entries.capacity() * size_of::<Entry>()
    }

    /// Forgets every event, keeping the room.
    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.attributes.clear();
        self.entries.clear();
    }

    /// Keeps the first `len` events.
    pub(crate) fn truncate(&mut self, len: usize) {
        if len >= self.entries.len() {
            return;
        }
        let (text_end, attributes_end) = match len.checked_sub(1) {
            Some(last) => (
                self.entries[last].text.end,
                self.entries[last].attributes.end,
            ),
            None => (0, 0),
        };
        self.entries.truncate(len);
        self.text.truncate(text_end);
        self.attributes.truncate(attributes_end);
    }

    /// Parses one line of the event stream and packs the event after the
    /// others. A line that is not an event leaves the rest as they were.
    pub(crate) fn push_json(&mut self, line: &[u8]) -> Result<(), crate::Error> {
        let raw: RawEvent<'_> =
            serde_json::from_slice(line).map_err(|err| crate::Error::decode(err, line))?;
        self.push(raw)
            .map_err(|reason| crate::Error::decode(reason, line))
    }

    /// The type, action, actor and time of event `index`.
    pub(crate) fn key(&self, index: usize) -> EventKey<'_> {
        let entry = &self.entries[index];
        EventKey::new(
            &self.text[entry.text.clone()],
            &entry.fields,
            entry.time,
            entry.time_nano,
        )
    }

    /// Event `index` as a [`DockerEvent`] of its own: one allocation.
    pub(crate) fn event(&self, index: usize) -> DockerEvent {
        let entry = &self.entries[index];
        DockerEvent {
            text: Arc::from(&self.text[entry.text.clone()]),
            fields: entry.fields,
            attributes: SmallVec::from_slice(&self.attributes[entry.attributes.clone()]),
            has_actor: entry.has_actor,
            time: entry.time,
            time_nano: entry.time_nano,
        }
    }

    /// Packs `raw` after the other events; on failure nothing changes.
    fn push(&mut self, raw: RawEvent<'_>) -> Result<(), &'static str> {
        let text_start = self.text.len();
        let attributes_start = self.attributes.len();
        match self.pack(raw) {
            Ok(entry) => {
                self.entries.push(entry);
                Ok(())
            }
            Err(reason) => {
                self.text.truncate(text_start);
                self.attributes.truncate(attributes_start);
                Err(reason)
            }
        }
    }

    fn pack(&mut self, mut raw: RawEvent<'_>) -> Result<Entry, &'static str> {
        let text_start = self.text.len();
        let attributes_start = self.attributes.len();
        let actor = raw.actor.take();
        let has_actor = actor.is_some();
        let (actor_id, mut pairs) = match actor {
            Some(actor) => (actor.id, actor.attributes.0),
            None => (None, Vec::new()),
        };
        // Docker sends them sorted; sort otherwise, keeping the last of a
        // repeated key as a map would.
        if !pairs.windows(2).all(|w| w[0].0 < w[1].0) {
            pairs.reverse();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            pairs.dedup_by(|later, earlier| later.0 == earlier.0);
        }
        let strings = [
            raw.kind.as_deref(),
            raw.action.as_deref(),
            raw.scope.as_deref(),
            raw.status.as_deref(),
            raw.id.as_deref(),
            raw.from.as_deref(),
            actor_id.as_deref(),
        ];
        let mut fields = [Span::NONE; FIELDS];
        for (slot, value) in fields.iter_mut().zip(strings) {
            *slot = put(&mut self.text, text_start, value)?;
        }
        for (key, value) in &pairs {
            let key = put(&mut self.text, text_start, Some(key))?;
            let value = put(&mut self.text, text_start, Some(value))?;
            self.attributes.push((key, value));
        }
        Ok(Entry {
            text: text_start..self.text.len(),
            attributes: attributes_start..self.attributes.len(),
            fields,
            has_actor,
            time: raw.time,
            time_nano: raw.time_nano,
        })
    }
}

/// Appends `value` to `text`, returning where it went, counted from `base`.
fn put(text: &mut String, base: usize, value: Option<&str>) -> Result<Span, &'static str> {
    let Some(value) = value else {
        return Ok(Span::NONE);
    };
    let span = Span {
        start: u32::try_from(text.len() - base).map_err(|_| "event too large")?,
        len: u32::try_from(value.len()).map_err(|_| "event too large")?,
    };
    text.push_str(value);
    Ok(span)
}

/// A scratch buffer bigger than this after an event is let go rather than
/// kept for the next one.
const SCRATCH_KEPT: usize = 64 * 1024;

thread_local! {
    /// Where a single event is packed before it gets its own allocation.
    static SCRATCH: RefCell<Packed> = const {
        RefCell::new(Packed {
            text: String::new(),
            attributes: Vec::new(),
            entries: Vec::new(),
        })
    };
}

/// Packs one event in this thread's scratch buffer and copies it out.
fn with_scratch<E>(pack: impl FnOnce(&mut Packed) -> Result<(), E>) -> Result<DockerEvent, E> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        scratch.clear();
        let event = pack(&mut scratch).map(|()| scratch.event(0));
        if scratch.footprint() > SCRATCH_KEPT {
            *scratch = Packed::default();
        }
        event
    })
}

/// [`DockerEvent::from_json`].
pub(super) fn from_json(line: &[u8]) -> Result<DockerEvent, crate::Error> {
    with_scratch(|scratch| scratch.push_json(line))
}

/// `Deserialize` for [`DockerEvent`], from any format serde reads.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<DockerEvent, D::Error> {
    let raw = RawEvent::deserialize(deserializer)?;
    with_scratch(|scratch| scratch.push(raw).map_err(de::Error::custom))
}

/// The event as the daemon writes it, borrowing from the input where it can.
#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(rename = "Type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "Action", borrow, default)]
    action: Option<Cow<'a, str>>,
    #[serde(rename = "Actor", borrow, default)]
    actor: Option<RawActor<'a>>,
    #[serde(borrow, default)]
    scope: Option<Cow<'a, str>>,
    #[serde(default)]
    time: Option<i64>,
    #[serde(rename = "timeNano", default)]
    time_nano: Option<i64>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    from: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawActor<'a> {
    #[serde(rename = "ID", borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "Attributes", borrow, default)]
    attributes: RawAttributes<'a>,
}

/// Attribute pairs in the order received; `null` reads as none.
#[derive(Default)]
struct RawAttributes<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for RawAttributes<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor;

        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = RawAttributes<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings to strings, or null")
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RawAttributes::default())
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RawAttributes::default())
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_map(self)
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                // The hint comes from the input in some formats: trust it
                // only as far as an event's usual attributes go.
                let room = map.size_hint().unwrap_or(8).min(INLINE_ATTRIBUTES);
                let mut pairs = Vec::with_capacity(room);
                while let Some(pair) = map.next_entry::<Borrowed<'de>, Borrowed<'de>>()? {
                    pairs.push((pair.0.0, pair.1.0));
                }
                Ok(RawAttributes(pairs))
            }
        }

        deserializer.deserialize_option(PairsVisitor)
    }
}

/// A string that borrows from the input unless it holds escapes.
struct Borrowed<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Borrowed<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;

        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Borrowed<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Borrowed(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Borrowed(Cow::Owned(v.to_string())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Borrowed(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(StrVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: [&str; 3] = [
        r#"{"Type":"container","Action":"start","Actor":{"ID":"c1","Attributes":{"name":"web","image":"nginx"}},"time":1,"timeNano":1000000001}"#,
        r#"{"status":"pull","id":"busybox:latest","from":"busybox","time":2}"#,
        r#"{"Type":"network","Action":"connect","Actor":{"ID":"n1","Attributes":{"container":"c1"}},"scope":"local","timeNano":3}"#,
    ];

    fn packed(lines: &[&str]) -> Packed {
        let mut packed = Packed::default();
        for line in lines {
            packed.push_json(line.as_bytes()).unwrap();
        }
        packed
    }

    fn alone(line: &str) -> DockerEvent {
        DockerEvent::from_json(line.as_bytes()).unwrap()
    }

    #[test]
    fn each_packed_event_equals_the_event_parsed_alone() {
        let packed = packed(&LINES);
        assert_eq!(packed.len(), 3);
        for (index, line) in LINES.iter().enumerate() {
            let event = packed.event(index);
            assert_eq!(event, alone(line));
            assert_eq!(packed.key(index), event.key());
        }
        assert_eq!(packed.event(2).attribute("container"), Some("c1"));
        assert_eq!(packed.key(1).action, Some("pull"));
        assert_eq!(packed.key(1).time_nanos, Some(2_000_000_000));
    }

    #[test]
    fn a_bad_line_leaves_the_events_before_it_intact() {
        let mut packed = packed(&LINES[..1]);
        assert!(
            packed
                .push_json(br#"{"Type":"container","Actor":{"ID":5}}"#)
                .is_err()
        );
        assert!(packed.push_json(b"<html>").is_err());
        packed.push_json(LINES[1].as_bytes()).unwrap();
        assert_eq!(packed.len(), 2);
        assert_eq!(packed.event(0), alone(LINES[0]));
        assert_eq!(packed.event(1), alone(LINES[1]));
    }

    #[test]
    fn truncating_and_reusing_leave_nothing_behind() {
        let mut packed = packed(&LINES);
        packed.truncate(1);
        packed.push_json(LINES[2].as_bytes()).unwrap();
        assert_eq!(packed.event(1), alone(LINES[2]));
        packed.truncate(0);
        assert_eq!(packed.len(), 0);

        packed.clear();
        assert!(!packed.is_unallocated());
        packed.push_json(LINES[1].as_bytes()).unwrap();
        assert_eq!(packed.len(), 1);
        assert_eq!(packed.event(0), alone(LINES[1]));
        assert!(Packed::default().is_unallocated());
    }
}
