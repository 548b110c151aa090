//! The event model: one Docker event as the daemon reports it.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// One event from a Docker daemon's `/events` stream.
///
/// Every field is optional, because daemons of different ages send different
/// subsets; unknown fields are ignored. Serialising gives back Docker's own
/// field names (`Type`, `Action`, `Actor`, `scope`, `time`, `timeNano`, and the
/// legacy `status`, `id`, `from`), leaving out the fields that are `None`.
///
/// Attributes are a [`BTreeMap`], so serialised events list them in a stable
/// order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerEvent {
    /// The kind of object: `container`, `image`, `volume`, `network`,
    /// `daemon`, `plugin`, `node`, `service`, `secret`, `config`.
    #[serde(rename = "Type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,

    /// What happened, as the daemon wrote it. Some actions carry text after a
    /// colon (`exec_start: /bin/sh -c true`, `health_status: healthy`); see
    /// [`DockerEvent::action_name`] and [`DockerEvent::action_detail`].
    #[serde(rename = "Action", default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,

    /// The object the event is about.
    #[serde(rename = "Actor", default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<DockerEventActor>,

    /// `local` or `swarm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,

    /// Unix time of the event, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,

    /// Unix time of the event, in nanoseconds.
    #[serde(rename = "timeNano", default, skip_serializing_if = "Option::is_none")]
    pub time_nano: Option<i64>,

    /// Legacy: the action, sent for container and image events by daemons
    /// older than API 1.52.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,

    /// Legacy: the actor's id, sent by daemons older than API 1.52.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,

    /// Legacy: the container's image, sent by daemons older than API 1.52.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// The object a [`DockerEvent`] is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerEventActor {
    /// The object's id (a container id, a volume name, ...).
    #[serde(rename = "ID", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,

    /// Labels and other details (`name`, `image`, `exitCode`, ...). A `null`
    /// from the daemon reads as an empty map.
    #[serde(rename = "Attributes", default, deserialize_with = "null_as_empty")]
    pub attributes: BTreeMap<String, String>,
}

fn null_as_empty<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<BTreeMap<String, String>>::deserialize(deserializer)?.unwrap_or_default())
}

impl DockerEvent {
    /// Parses one line of the event stream.
    pub fn from_json(line: &[u8]) -> Result<Self, crate::Error> {
        serde_json::from_slice(line).map_err(|err| crate::Error::decode(err, line))
    }

    /// The time of the event in nanoseconds since the Unix epoch: `timeNano`
    /// when present, otherwise `time` in whole seconds.
    pub fn timestamp_nanos(&self) -> Option<i64> {
        self.time_nano
            .or_else(|| self.time.and_then(|secs| secs.checked_mul(1_000_000_000)))
    }

    /// The action without any text after a colon: `exec_start` for
    /// `exec_start: /bin/sh -c true`.
    pub fn action_name(&self) -> Option<&str> {
        let action = self.action.as_deref().or(self.status.as_deref())?;
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
        let action = self.action.as_deref().or(self.status.as_deref())?;
        action.split_once(':').map(|(_, detail)| detail.trim())
    }

    /// The actor's id, falling back to the legacy `id` field.
    pub fn actor_id(&self) -> Option<&str> {
        self.actor
            .as_ref()
            .and_then(|actor| actor.id.as_deref())
            .or(self.id.as_deref())
    }

    /// One of the actor's attributes, such as `name` or `exitCode`.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.actor.as_ref()?.attributes.get(key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_attributes_and_missing_actor_are_accepted() {
        let event = DockerEvent::from_json(
            br#"{"Type":"container","Action":"start","Actor":{"ID":"ab","Attributes":null}}"#,
        )
        .unwrap();
        assert_eq!(event.actor_id(), Some("ab"));
        assert!(event.actor.unwrap().attributes.is_empty());

        let bare = DockerEvent::from_json(br#"{"Type":"daemon","time":5}"#).unwrap();
        assert_eq!(bare.actor, None);
        assert_eq!(bare.timestamp_nanos(), Some(5_000_000_000));
    }

    #[test]
    fn time_nano_wins_over_time_and_is_never_added_to_it() {
        let event =
            DockerEvent::from_json(br#"{"time":1700000000,"timeNano":1700000000000000123}"#)
                .unwrap();
        assert_eq!(event.timestamp_nanos(), Some(1_700_000_000_000_000_123));
    }

    #[test]
    fn action_parts() {
        let event = DockerEvent {
            action: Some("exec_create: /bin/sh -c true".into()),
            ..DockerEvent::default()
        };
        assert_eq!(event.action_name(), Some("exec_create"));
        assert_eq!(event.action_detail(), Some("/bin/sh -c true"));

        let plain = DockerEvent {
            action: Some("die".into()),
            ..DockerEvent::default()
        };
        assert_eq!(plain.action_name(), Some("die"));
        assert_eq!(plain.action_detail(), None);
    }

    #[test]
    fn unknown_fields_are_ignored_and_bad_json_is_an_error() {
        assert!(DockerEvent::from_json(br#"{"Type":"x","NewField":[1,2]}"#).is_ok());
        let err = DockerEvent::from_json(b"<html>").unwrap_err();
        assert!(matches!(err, crate::Error::Decode { ref excerpt, .. } if excerpt == "<html>"));
    }
}
