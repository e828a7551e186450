//! Principals and their API tokens.
//!
//! A token is 32 random bytes shown once, as `vgl_` and 43 base64url characters. Only its
//! SHA-256 hash is stored: a copy of the access store lets nobody sign in. The tokens are
//! high-entropy, so a plain hash (not a slow password hash) is enough.

use std::fmt;

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigil_core::ResourceId;

use crate::AccessError;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads case metadata; requests access to cases; reads flagged records under a grant.
    Reviewer,
    /// A reviewer who also approves, denies and revokes other principals' requests.
    Manager,
    /// Changes resources' settings and deletes data; reads no content.
    Admin,
    /// Owns resources: reads their settings and deletes their data.
    Customer,
}

impl Role {
    /// The role's name, as the API and the audit log write it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reviewer => "reviewer",
            Role::Manager => "manager",
            Role::Admin => "admin",
            Role::Customer => "customer",
        }
    }

    /// Parses a role name.
    pub fn parse(name: &str) -> Option<Self> {
        [Role::Reviewer, Role::Manager, Role::Admin, Role::Customer]
            .into_iter()
            .find(|r| r.name() == name)
    }

    /// Whether the role reviews: reads case metadata and may hold grants.
    pub fn reviews(self) -> bool {
        matches!(self, Role::Reviewer | Role::Manager)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a principal is located, for the EEA rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Region {
    /// In the European Economic Area.
    Eea,
    /// Anywhere else.
    NonEea,
}

impl Region {
    /// The region's name.
    pub fn name(self) -> &'static str {
        match self {
            Region::Eea => "eea",
            Region::NonEea => "non-eea",
        }
    }

    /// Parses a region name.
    pub fn parse(name: &str) -> Option<Self> {
        [Region::Eea, Region::NonEea]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A person or system that signs in with a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// Unique name; it is what the audit log records.
    pub name: String,
    /// What the principal may do.
    pub role: Role,
    /// Where the principal is located.
    pub region: Region,
    /// For customers: the resources they own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceId>,
}

impl Principal {
    /// Checks the name: 1-64 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
    pub fn check_name(name: &str) -> Result<(), AccessError> {
        let ok = (1..=64).contains(&name.len())
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(())
        } else {
            Err(AccessError::Invalid(
                "name must be 1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
                    .into(),
            ))
        }
    }

    /// Whether this principal owns `resource`.
    pub fn owns(&self, resource: &str) -> bool {
        self.role == Role::Customer && self.resources.iter().any(|r| r.as_str() == resource)
    }
}

/// A secret API token, as shown once to its holder.
pub struct Token(String);

/// The prefix every token starts with, so a leaked one is easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "vgl_";

/// The prefix of a one-time sign-in code (exchanged once for a token).
pub const SIGN_IN_PREFIX: &str = "vgs_";

impl Token {
    /// A new random token.
    pub fn generate() -> Self {
        Self::with_prefix(TOKEN_PREFIX)
    }

    /// A new random one-time sign-in code.
    pub fn sign_in_code() -> Self {
        Self::with_prefix(SIGN_IN_PREFIX)
    }

    fn with_prefix(prefix: &str) -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(format!(
            "{prefix}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// The token's text, to show its holder once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash the store keeps.
    pub fn hash(&self) -> [u8; 32] {
        hash_token(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The stored form of a presented token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = Token::generate();
        let b = Token::generate();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(a.expose().len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(a.hash(), hash_token(a.expose()));
        assert_eq!(format!("{a:?}"), "Token(..)");
    }

    #[test]
    fn names_roles_and_regions() {
        assert!(Principal::check_name("alice.b-2").is_ok());
        for bad in ["", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert!(Principal::check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(Role::parse("manager"), Some(Role::Manager));
        assert_eq!(Role::parse("root"), None);
        assert_eq!(Region::parse("non-eea"), Some(Region::NonEea));
        assert!(Role::Manager.reviews() && !Role::Admin.reviews());
    }
}
