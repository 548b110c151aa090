//! The event model against real daemon output.

mod common;

use portainer::{DockerEvent, ListenerResult};
use serde_json::Value;

#[test]
fn every_fixture_line_round_trips_to_the_same_json() {
    let lines = common::fixtures::fixture_lines();
    assert!(lines.len() > 40);
    for line in &lines {
        let event = DockerEvent::from_json(line.as_bytes()).expect(line);
        let original: Value = serde_json::from_str(line).unwrap();
        let written: Value = serde_json::to_value(&event).unwrap();
        assert_eq!(written, original, "round trip changed {line}");
    }
}

#[test]
fn fixture_fields_land_where_expected() {
    let lines = common::fixtures::fixture_lines();
    let events: Vec<DockerEvent> = lines
        .iter()
        .map(|l| DockerEvent::from_json(l.as_bytes()).unwrap())
        .collect();
    let create = events
        .iter()
        .find(|e| e.kind() == Some("container") && e.action() == Some("create"))
        .unwrap();
    assert_eq!(create.attribute("name"), Some("web1"));
    assert_eq!(create.attribute("com.example.note"), Some("a b=c"));
    assert_eq!(create.from(), Some("bb:latest"));
    assert_eq!(create.status(), Some("create"));
    assert_eq!(create.timestamp_nanos(), Some(1_796_300_697_806_257_370));

    let die = events.iter().find(|e| e.action() == Some("die")).unwrap();
    assert!(die.attribute("exitCode").is_some());

    let health = events
        .iter()
        .find(|e| e.action_name() == Some("health_status"))
        .unwrap();
    assert_eq!(health.action_detail(), Some("healthy"));

    let daemon = events.iter().find(|e| e.kind() == Some("daemon")).unwrap();
    assert_eq!(
        daemon.status(),
        None,
        "daemon events carry no legacy fields"
    );
}

#[test]
fn listener_result_serialises_with_docker_names() {
    let line = &common::fixtures::fixture_lines()[2];
    let result = ListenerResult {
        endpoint_id: 3,
        event: DockerEvent::from_json(line.as_bytes()).unwrap(),
    };
    let json: Value = serde_json::to_value(&result).unwrap();
    assert_eq!(json["endpoint_id"], 3);
    assert_eq!(json["event"]["Action"], "create");
    assert_eq!(json["event"]["Actor"]["Attributes"]["name"], "web1");
    assert!(json["event"]["timeNano"].is_i64());
}
