//! The resource registry: which customer resources exist, where their data lives, and how it
//! is kept.
//!
//! The registry is a TOML file of `[[resources]]` tables. It is the single source of truth for a
//! resource's home geography: routing rejects any record that claims another one.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ids::{Geography, ResourceId};

/// A reference to a customer-managed key-encryption key.
///
/// The only scheme today is `file:PATH`: a file holding 32 bytes as 64 hex digits, standing in
/// for a key in the customer's key vault. A relative path is resolved against the directory of
/// the registry file. Removing or changing the file revokes the key: the resource's stored
/// content can no longer be decrypted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
#[serde(try_from = "String", into = "String")]
pub struct KeyRef(String);

impl KeyRef {
    const FILE_SCHEME: &'static str = "file:";

    /// Parses a key reference.
    pub fn parse(s: impl Into<String>) -> Result<Self, RegistryError> {
        let s = s.into();
        match s.strip_prefix(Self::FILE_SCHEME) {
            Some(path) if !path.is_empty() => Ok(Self(s)),
            _ => Err(RegistryError::Invalid(
                "customer_key must look like file:PATH".into(),
            )),
        }
    }

    /// The key file's path, resolved against `base` when relative.
    pub fn path(&self, base: &Path) -> PathBuf {
        let path = Path::new(&self.0[Self::FILE_SCHEME.len()..]);
        base.join(path)
    }

    /// The reference as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyRef {
    type Error = RegistryError;
    fn try_from(s: String) -> Result<Self, RegistryError> {
        Self::parse(s)
    }
}

impl From<KeyRef> for String {
    fn from(k: KeyRef) -> String {
        k.0
    }
}

const fn default_content_logging() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// One customer resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// The resource ID, as records carry it.
    pub id: ResourceId,
    /// The home geography: the only place its data is stored.
    pub geography: Geography,
    /// Whether prompts and completions are stored at rest. `false` means the resource was
    /// approved for modified abuse monitoring: only metadata is kept.
    #[serde(default = "default_content_logging", skip_serializing_if = "is_true")]
    pub content_logging: bool,
    /// The customer-managed key that wraps this resource's data key, if any; otherwise vigil's
    /// master key does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_key: Option<KeyRef>,
    /// Days to keep this resource's records, if shorter than its geography's retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

/// A capability entry as the management API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// The capability's name.
    pub name: String,
    /// Its value, as a string.
    pub value: String,
}

impl Resource {
    /// A resource with the defaults: content logging on, vigil's master key, the geography's
    /// retention.
    pub fn new(id: ResourceId, geography: Geography) -> Self {
        Self {
            id,
            geography,
            content_logging: true,
            customer_key: None,
            retention_days: None,
        }
    }

    /// The resource's capabilities: `{"name":"ContentLogging","value":"false"}` exactly when
    /// content logging is off, and no ContentLogging entry otherwise.
    pub fn capabilities(&self) -> Vec<Capability> {
        let mut caps = Vec::new();
        if !self.content_logging {
            caps.push(Capability {
                name: "ContentLogging".into(),
                value: "false".into(),
            });
        }
        caps
    }
}

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry file could not be read or written.
    #[error("resource registry {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The registry file is not valid TOML of the expected shape.
    #[error("resource registry {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (the registry holds no content, so it may quote it).
        message: String,
    },
    /// A value breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// The resource is already registered.
    #[error("resource {0} is already registered")]
    Duplicate(ResourceId),
    /// No such resource.
    #[error("resource {0} is not registered")]
    NotFound(String),
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    resources: Vec<Resource>,
}

/// All known resources, by ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceRegistry {
    resources: BTreeMap<ResourceId, Resource>,
    /// The directory relative key references are resolved against.
    base_dir: PathBuf,
}

impl ResourceRegistry {
    /// Reads a registry file. A missing file is an empty registry.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(RegistryError::Io {
                    path: path.into(),
                    source,
                })
            }
        };
        let file: RegistryFile = toml::from_str(&text).map_err(|e| RegistryError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let mut registry = Self {
            resources: BTreeMap::new(),
            base_dir,
        };
        for r in file.resources {
            registry.add(r)?;
        }
        Ok(registry)
    }

    /// Writes the registry atomically (a temporary file renamed over the old one).
    pub fn save(&self, path: &Path) -> Result<(), RegistryError> {
        let io = |source| RegistryError::Io {
            path: path.into(),
            source,
        };
        let file = RegistryFile {
            resources: self.resources.values().cloned().collect(),
        };
        let text =
            toml::to_string_pretty(&file).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        crate::atomic_file::replace(path, text.as_bytes(), 0o644).map_err(io)
    }

    /// Adds a resource; its ID must be new.
    pub fn add(&mut self, resource: Resource) -> Result<(), RegistryError> {
        if let Some(0) = resource.retention_days {
            return Err(RegistryError::Invalid(format!(
                "resource {}: retention_days must be at least 1",
                resource.id
            )));
        }
        if self.resources.contains_key(&resource.id) {
            return Err(RegistryError::Duplicate(resource.id));
        }
        self.resources.insert(resource.id.clone(), resource);
        Ok(())
    }

    /// Replaces a registered resource with an updated version. The home geography cannot
    /// change: data already stored there would be stranded in the wrong geography.
    pub fn update(&mut self, resource: Resource) -> Result<(), RegistryError> {
        let current = self
            .resources
            .get_mut(resource.id.as_str())
            .ok_or_else(|| RegistryError::NotFound(resource.id.to_string()))?;
        if current.geography != resource.geography {
            return Err(RegistryError::Invalid(format!(
                "resource {}: the home geography cannot change (it is {})",
                resource.id, current.geography
            )));
        }
        if let Some(0) = resource.retention_days {
            return Err(RegistryError::Invalid(format!(
                "resource {}: retention_days must be at least 1",
                resource.id
            )));
        }
        *current = resource;
        Ok(())
    }

    /// The resource with this ID.
    pub fn get(&self, id: &str) -> Option<&Resource> {
        self.resources.get(id)
    }

    /// All resources, ordered by ID.
    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.resources.values()
    }

    /// The number of resources.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Whether there are no resources.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// The directory relative key references resolve against.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(id: &str, geo: &str) -> Resource {
        Resource::new(
            ResourceId::parse(id).unwrap(),
            Geography::parse(geo).unwrap(),
        )
    }

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resources.toml");
        let mut reg = ResourceRegistry::load(&path).unwrap();
        assert!(reg.is_empty());
        let mut quiet = res("quiet", "eu");
        quiet.content_logging = false;
        quiet.customer_key = Some(KeyRef::parse("file:keys/q.key").unwrap());
        quiet.retention_days = Some(7);
        reg.add(quiet.clone()).unwrap();
        reg.add(res("loud", "us")).unwrap();
        reg.save(&path).unwrap();
        let back = ResourceRegistry::load(&path).unwrap();
        assert_eq!(back.get("quiet"), Some(&quiet));
        assert_eq!(back.len(), 2);
        assert_eq!(
            quiet.customer_key.unwrap().path(back.base_dir()),
            dir.path().join("keys/q.key")
        );
    }

    #[test]
    fn refuses_duplicates_and_geography_changes() {
        let mut reg = ResourceRegistry::default();
        reg.add(res("a", "eu")).unwrap();
        assert!(matches!(
            reg.add(res("a", "us")),
            Err(RegistryError::Duplicate(_))
        ));
        assert!(matches!(
            reg.update(res("a", "us")),
            Err(RegistryError::Invalid(_))
        ));
        assert!(matches!(
            reg.update(res("b", "us")),
            Err(RegistryError::NotFound(_))
        ));
    }

    #[test]
    fn content_logging_capability_only_when_off() {
        let mut r = res("a", "eu");
        assert!(r.capabilities().is_empty());
        r.content_logging = false;
        assert_eq!(
            serde_json::to_string(&r.capabilities()).unwrap(),
            r#"[{"name":"ContentLogging","value":"false"}]"#
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        fs::write(
            &path,
            "[[resources]]\nid='a'\ngeography='eu'\ncontent_loging=false\n",
        )
        .unwrap();
        assert!(matches!(
            ResourceRegistry::load(&path),
            Err(RegistryError::Parse { .. })
        ));
    }
}
