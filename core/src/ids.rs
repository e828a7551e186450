//! Identifier newtypes and their grammars.
//!
//! Identifiers are the only values vigil ever names in logs, metrics, errors and dead-letter
//! reasons, so their grammars are deliberately narrow: printable ASCII without spaces or NUL.
//! The NUL-free guarantee matters to storage, which uses `0x00` as a key separator to keep each
//! resource's records in one contiguous key range.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a string is not a valid identifier. Never carries the rejected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty.
    #[error("must not be empty")]
    Empty,
    /// The string is longer than the grammar allows.
    #[error("is {len} characters long, the maximum is {max}")]
    TooLong {
        /// The length found.
        len: usize,
        /// The longest allowed.
        max: usize,
    },
    /// The string holds a character the grammar does not allow.
    #[error("may only contain {allowed}")]
    BadCharacter {
        /// A description of the allowed characters.
        allowed: &'static str,
    },
}

/// The grammar of one identifier kind.
struct Grammar {
    max_len: usize,
    allowed: &'static str,
    is_allowed: fn(u8) -> bool,
}

impl Grammar {
    fn check(&self, s: &str) -> Result<(), IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > self.max_len {
            return Err(IdError::TooLong {
                len: s.chars().count(),
                max: self.max_len,
            });
        }
        if !s.bytes().all(self.is_allowed) {
            return Err(IdError::BadCharacter {
                allowed: self.allowed,
            });
        }
        Ok(())
    }
}

const REQUEST_ID: Grammar = Grammar {
    max_len: 128,
    allowed: "A-Z a-z 0-9 . _ : -",
    is_allowed: |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'),
};

const RESOURCE_ID: Grammar = Grammar {
    max_len: 256,
    allowed: "A-Z a-z 0-9 . _ : / -",
    is_allowed: |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'),
};

const GEOGRAPHY: Grammar = Grammar {
    max_len: 32,
    allowed: "a-z 0-9 -",
    is_allowed: |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-',
};

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $grammar:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks `s` against the grammar and wraps it.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                $grammar.check(&s)?;
                Ok(Self(s))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

identifier!(
    /// A request ID: unique per exchange, 1-128 characters of `A-Za-z0-9._:-`.
    RequestId,
    REQUEST_ID
);
identifier!(
    /// A customer resource ID: 1-256 characters of `A-Za-z0-9._:/-` (room for Azure resource
    /// paths).
    ResourceId,
    RESOURCE_ID
);
identifier!(
    /// A geography name such as `us`, `eu` or `apac`: 1-32 characters of `a-z0-9-`.
    Geography,
    GEOGRAPHY
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_grammar() {
        assert!(RequestId::parse("req-1.a_b:c").is_ok());
        assert_eq!(RequestId::parse(""), Err(IdError::Empty));
        assert!(matches!(
            RequestId::parse("x".repeat(129)),
            Err(IdError::TooLong { len: 129, max: 128 })
        ));
        assert!(RequestId::parse("x".repeat(128)).is_ok());
        assert!(matches!(
            RequestId::parse("has space"),
            Err(IdError::BadCharacter { .. })
        ));
        assert!(matches!(
            RequestId::parse("a/b"),
            Err(IdError::BadCharacter { .. })
        ));
    }

    #[test]
    fn geography_is_lowercase() {
        assert!(Geography::parse("eu").is_ok());
        assert!(Geography::parse("EU").is_err());
    }

    #[test]
    fn error_never_echoes_the_value() {
        let err = ResourceId::parse("secret value\0").unwrap_err().to_string();
        assert!(!err.contains("secret"));
    }
}
