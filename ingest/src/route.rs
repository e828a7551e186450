//! Routing: every record goes to its resource's home geography, or nowhere.
//!
//! Global and Data Zone deployments may process a request anywhere; where it is *stored* is
//! decided only by the resource's registered home. A record that names an unknown resource, or
//! claims a geography other than its resource's home, is rejected rather than stored in the
//! wrong place.

use vigil_core::{Geography, LogRecord, Resource, ResourceRegistry};

use crate::reject::RejectReason;

/// Looks records up in the resource registry.
#[derive(Debug, Clone, Copy)]
pub struct Router<'a> {
    registry: &'a ResourceRegistry,
}

impl<'a> Router<'a> {
    /// A router over `registry`.
    pub fn new(registry: &'a ResourceRegistry) -> Self {
        Self { registry }
    }

    /// The resource that `record` belongs to, if the record may be stored at its home.
    /// `arrived_for` is the geography whose topic the record arrived on, when the source is
    /// partitioned by geography: a record is accepted only from its home geography's topic.
    pub fn route(
        &self,
        record: &LogRecord,
        arrived_for: Option<&Geography>,
    ) -> Result<&'a Resource, RejectReason> {
        let resource = self
            .registry
            .get(record.meta.resource_id.as_str())
            .ok_or(RejectReason::UnknownResource)?;
        Self::admit(resource, record, arrived_for)
    }

    /// Whether `record` may be stored at `resource`'s home (a resource looked up elsewhere,
    /// such as one added to the registry since this router was made).
    pub fn admit<'r>(
        resource: &'r Resource,
        record: &LogRecord,
        arrived_for: Option<&Geography>,
    ) -> Result<&'r Resource, RejectReason> {
        if resource.geography != record.meta.geography {
            return Err(RejectReason::ResidencyMismatch {
                claimed: record.meta.geography.clone(),
                home: resource.geography.clone(),
            });
        }
        match arrived_for {
            Some(topic) if *topic != resource.geography => Err(RejectReason::WrongTopic {
                topic: topic.clone(),
                home: resource.geography.clone(),
            }),
            _ => Ok(resource),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::ResourceId;

    fn record(resource: &str, geo: &str) -> LogRecord {
        LogRecord::from_json(&format!(
            r#"{{"request_id":"r","resource_id":"{resource}","geography":"{geo}","deployment":"global","timestamp":"2026-11-20T00:00:00Z","operation":"chat","model":"m"}}"#
        ))
        .unwrap()
    }

    #[test]
    fn routes_home_and_rejects_the_rest() {
        let mut reg = ResourceRegistry::default();
        reg.add(Resource::new(
            ResourceId::parse("a").unwrap(),
            Geography::parse("eu").unwrap(),
        ))
        .unwrap();
        let router = Router::new(&reg);
        assert_eq!(
            router.route(&record("a", "eu"), None).unwrap().id.as_str(),
            "a"
        );
        assert_eq!(
            router.route(&record("b", "eu"), None).unwrap_err(),
            RejectReason::UnknownResource
        );
        let err = router.route(&record("a", "us"), None).unwrap_err();
        assert_eq!(err.code(), "residency_mismatch");
        assert_eq!(err.field(), Some("geography"));
        let eu = Geography::parse("eu").unwrap();
        let us = Geography::parse("us").unwrap();
        assert!(router.route(&record("a", "eu"), Some(&eu)).is_ok());
        // The record's own claim is consistent, but it came through another geography.
        let err = router.route(&record("a", "eu"), Some(&us)).unwrap_err();
        assert_eq!(err.code(), "wrong_topic");
        // A false claim is reported as such, whatever the topic.
        let err = router.route(&record("a", "us"), Some(&us)).unwrap_err();
        assert_eq!(err.code(), "residency_mismatch");
    }
}
