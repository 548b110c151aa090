//! Portainer's endpoints (environments), as `GET /api/endpoints` lists them.

use serde::{Deserialize, Serialize};

/// One endpoint (Portainer calls them environments).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The endpoint's id, used in every Docker API path.
    #[serde(rename = "Id")]
    pub id: u64,
    /// The name shown in Portainer.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// What kind of environment it is.
    #[serde(rename = "Type")]
    pub kind: EndpointType,
    /// Whether Portainer last saw it up.
    #[serde(rename = "Status", default)]
    pub status: EndpointStatus,
    /// Where Portainer reaches it.
    #[serde(rename = "URL", default)]
    pub url: String,
}

impl Endpoint {
    /// Whether Portainer proxies a Docker API for this endpoint.
    pub fn has_docker_api(&self) -> bool {
        self.kind.has_docker_api()
    }
}

/// The kind of an [`Endpoint`], from Portainer's numeric `Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u8", into = "u8")]
pub enum EndpointType {
    /// 1: a Docker Engine Portainer reaches directly.
    Docker,
    /// 2: a Docker Engine behind the Portainer agent.
    Agent,
    /// 3: Azure Container Instances (no Docker API).
    Azure,
    /// 4: a Docker Engine behind an Edge agent.
    EdgeAgent,
    /// 5: the local Kubernetes cluster (no Docker API).
    KubernetesLocal,
    /// 6: a Kubernetes cluster behind an agent (no Docker API).
    KubernetesAgent,
    /// 7: a Kubernetes cluster behind an Edge agent (no Docker API).
    KubernetesEdgeAgent,
    /// A type this crate does not know; treated as having no Docker API.
    Unknown(u8),
}

impl EndpointType {
    /// Whether endpoints of this type answer Docker API calls.
    pub fn has_docker_api(self) -> bool {
        matches!(
            self,
            EndpointType::Docker | EndpointType::Agent | EndpointType::EdgeAgent
        )
    }
}

impl From<u8> for EndpointType {
    fn from(value: u8) -> Self {
        match value {
            1 => EndpointType::Docker,
            2 => EndpointType::Agent,
            3 => EndpointType::Azure,
            4 => EndpointType::EdgeAgent,
            5 => EndpointType::KubernetesLocal,
            6 => EndpointType::KubernetesAgent,
            7 => EndpointType::KubernetesEdgeAgent,
            other => EndpointType::Unknown(other),
        }
    }
}

impl From<EndpointType> for u8 {
    fn from(value: EndpointType) -> Self {
        match value {
            EndpointType::Docker => 1,
            EndpointType::Agent => 2,
            EndpointType::Azure => 3,
            EndpointType::EdgeAgent => 4,
            EndpointType::KubernetesLocal => 5,
            EndpointType::KubernetesAgent => 6,
            EndpointType::KubernetesEdgeAgent => 7,
            EndpointType::Unknown(other) => other,
        }
    }
}

/// Whether Portainer last saw an [`Endpoint`] up, from its numeric `Status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u8", into = "u8")]
pub enum EndpointStatus {
    /// 1: up.
    Up,
    /// 2: down.
    Down,
    /// Missing or a value this crate does not know.
    #[default]
    Unknown,
}

impl From<u8> for EndpointStatus {
    fn from(value: u8) -> Self {
        match value {
            1 => EndpointStatus::Up,
            2 => EndpointStatus::Down,
            _ => EndpointStatus::Unknown,
        }
    }
}

impl From<EndpointStatus> for u8 {
    fn from(value: EndpointStatus) -> Self {
        match value {
            EndpointStatus::Up => 1,
            EndpointStatus::Down => 2,
            EndpointStatus::Unknown => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_portainer_fields_and_unknown_types() {
        let list: Vec<Endpoint> = serde_json::from_str(
            r#"[{"Id":1,"Name":"local","Type":1,"Status":1,"URL":"unix:///var/run/docker.sock","Extra":true},
                {"Id":9,"Name":"future","Type":42,"Status":7,"URL":""}]"#,
        )
        .unwrap();
        assert_eq!(list[0].kind, EndpointType::Docker);
        assert!(list[0].has_docker_api());
        assert_eq!(list[0].status, EndpointStatus::Up);
        assert_eq!(list[1].kind, EndpointType::Unknown(42));
        assert!(!list[1].has_docker_api());
        assert_eq!(list[1].status, EndpointStatus::Unknown);
    }

    #[test]
    fn only_docker_types_have_a_docker_api() {
        let with_api: Vec<u8> = (1..=7)
            .filter(|&t| EndpointType::from(t).has_docker_api())
            .collect();
        assert_eq!(with_api, vec![1, 2, 4]);
    }
}
