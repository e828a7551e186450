//! The access store: one sled database of principals, token hashes, workstations and access
//! requests. It holds names, IDs, regions and reasons; never content, never a token.
//!
//! Trees: `principals` (name → JSON), `tokens` (SHA-256 of a token → name), `workstations`
//! (certificate fingerprint → JSON), `requests` (ID → JSON) and `requests_by_reviewer`
//! (`requester \0 case \0 ID`, so a point query finds its caller's grants for one case with
//! one prefix scan). Every change is flushed before it returns.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;

use crate::grant::AccessRequest;
use crate::principal::{hash_token, Principal, Token};
use crate::workstation::Workstation;
use crate::AccessError;

/// A token as the `tokens` tree keeps it, under its hash.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredToken {
    name: String,
    /// Unix seconds.
    expires_at: i64,
    /// Unix seconds: when the session this token belongs to ends, re-issues included.
    #[serde(default)]
    session_ends_at: Option<i64>,
}

impl StoredToken {
    /// The holder's name and the expiry of a stored token that has not expired by `now`; none
    /// for one stored before tokens expired (its value a bare name), which is never trusted.
    fn unexpired(value: &[u8], now: OffsetDateTime) -> Option<(String, OffsetDateTime)> {
        let stored = serde_json::from_slice::<StoredToken>(value).ok()?;
        let expires_at = OffsetDateTime::from_unix_timestamp(stored.expires_at).ok()?;
        (expires_at > now).then_some((stored.name, expires_at))
    }

    /// The name of the holder of a stored token (of any version).
    fn holder(value: &[u8]) -> Vec<u8> {
        match serde_json::from_slice::<StoredToken>(value) {
            Ok(stored) => stored.name.into_bytes(),
            // Before tokens expired, the value was the holder's name.
            Err(_) => value.to_vec(),
        }
    }
}

/// The access store.
#[derive(Clone)]
pub struct AccessStore {
    db: sled::Db,
    principals: sled::Tree,
    /// Names of removed principals: never given out again, since grants and audit entries
    /// still name them.
    removed: sled::Tree,
    tokens: sled::Tree,
    /// One-time sign-in codes, by hash, as tokens are kept.
    sign_in_codes: sled::Tree,
    workstations: sled::Tree,
    requests: sled::Tree,
    by_reviewer: sled::Tree,
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, AccessError> {
    serde_json::from_slice(bytes).map_err(|e| AccessError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        problem: e.to_string(),
    })
}

/// The value under `key` in `tree`, decoded.
fn lookup<T: DeserializeOwned>(tree: &sled::Tree, key: &str) -> Result<Option<T>, AccessError> {
    tree.get(key.as_bytes())?
        .map(|v| decode(key.as_bytes(), &v))
        .transpose()
}

/// Every value in `tree`, decoded, in key order.
fn all<T: DeserializeOwned>(tree: &sled::Tree) -> Result<Vec<T>, AccessError> {
    tree.iter()
        .map(|kv| {
            let (k, v) = kv?;
            decode(&k, &v)
        })
        .collect()
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("access store values always encode")
}

fn reviewer_key(requester: &str, case_id: &str, id: &str) -> Vec<u8> {
    [
        requester.as_bytes(),
        b"\0",
        case_id.as_bytes(),
        b"\0",
        id.as_bytes(),
    ]
    .concat()
}

impl AccessStore {
    /// Opens (or creates) the store in `dir` (mode 0700).
    pub fn open(dir: &Path) -> Result<Self, AccessError> {
        crate::create_private_dir(dir).map_err(|source| AccessError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join("db");
        let db = vigil_storage::geo::open_db(&path).map_err(|e| {
            if vigil_storage::geo::is_lock_error(&e) {
                AccessError::InUse(path.clone())
            } else {
                AccessError::Store(e)
            }
        })?;
        Ok(Self {
            principals: db.open_tree("principals")?,
            removed: db.open_tree("removed_principals")?,
            tokens: db.open_tree("tokens")?,
            sign_in_codes: db.open_tree("sign_in_codes")?,
            workstations: db.open_tree("workstations")?,
            requests: db.open_tree("requests")?,
            by_reviewer: db.open_tree("requests_by_reviewer")?,
            db,
        })
    }

    fn flushed<T>(&self, value: T) -> Result<T, AccessError> {
        self.db.flush()?;
        Ok(value)
    }

    /// Adds a principal; the name must be new.
    pub fn add_principal(&self, principal: &Principal) -> Result<(), AccessError> {
        Principal::check_name(&principal.name)?;
        if self.removed.contains_key(principal.name.as_bytes())? {
            return Err(AccessError::Invalid(format!(
                "principal {} was removed; names are not reused (its grants and audit entries still name it)",
                principal.name
            )));
        }
        let added = self.principals.compare_and_swap(
            principal.name.as_bytes(),
            None::<&[u8]>,
            Some(encode(principal)),
        )?;
        if added.is_err() {
            return Err(AccessError::Duplicate(format!(
                "principal {}",
                principal.name
            )));
        }
        self.flushed(())
    }

    /// The principal called `name`.
    pub fn principal(&self, name: &str) -> Result<Option<Principal>, AccessError> {
        lookup(&self.principals, name)
    }

    /// Every principal, by name.
    pub fn principals(&self) -> Result<Vec<Principal>, AccessError> {
        all(&self.principals)
    }

    /// Removes a principal and every token of theirs. Their past requests stay, for the record.
    pub fn remove_principal(&self, name: &str) -> Result<(), AccessError> {
        if self.principals.remove(name.as_bytes())?.is_none() {
            return Err(AccessError::NotFound(format!("principal {name}")));
        }
        self.removed.insert(name.as_bytes(), &[])?;
        self.revoke_tokens(name)?;
        self.flushed(())
    }

    /// Issues a new token for `name`, valid until `expires_at`; it is returned once and stored
    /// only hashed.
    pub fn issue_token(
        &self,
        name: &str,
        expires_at: OffsetDateTime,
    ) -> Result<Token, AccessError> {
        self.issue_into(&self.tokens, Token::generate(), name, expires_at, None)
    }

    /// Re-issues the presented `token` at `now`: a new token for the same principal, valid
    /// for `ttl` but never past the end of the session it belongs to (`session` after the
    /// first token of the session was issued), and the presented one revoked. `None` when the
    /// token is not valid, or its session is over.
    pub fn reissue_token(
        &self,
        token: &str,
        now: OffsetDateTime,
        ttl: time::Duration,
        session: time::Duration,
    ) -> Result<Option<(Token, OffsetDateTime)>, AccessError> {
        let Some(value) = self.tokens.get(hash_token(token))? else {
            return Ok(None);
        };
        let Some((name, _)) = StoredToken::unexpired(&value, now) else {
            return Ok(None);
        };
        let session_ends_at = serde_json::from_slice::<StoredToken>(&value)
            .ok()
            .and_then(|t| t.session_ends_at)
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .unwrap_or(now + session);
        let expires_at = (now + ttl).min(session_ends_at);
        if expires_at <= now {
            return Ok(None);
        }
        let fresh = self.issue_into(
            &self.tokens,
            Token::generate(),
            &name,
            expires_at,
            Some(session_ends_at),
        )?;
        self.tokens.remove(hash_token(token))?;
        Ok(Some((self.flushed(fresh)?, expires_at)))
    }

    /// Stores `secret` (hashed) in `tree` for principal `name` until `expires_at`.
    fn issue_into(
        &self,
        tree: &sled::Tree,
        secret: Token,
        name: &str,
        expires_at: OffsetDateTime,
        session_ends_at: Option<OffsetDateTime>,
    ) -> Result<Token, AccessError> {
        if self.principal(name)?.is_none() {
            return Err(AccessError::NotFound(format!("principal {name}")));
        }
        let stored = StoredToken {
            name: name.to_owned(),
            expires_at: expires_at.unix_timestamp(),
            session_ends_at: session_ends_at.map(OffsetDateTime::unix_timestamp),
        };
        tree.insert(secret.hash(), encode(&stored))?;
        self.flushed(secret)
    }

    /// Removes the tokens and sign-in codes that expired by `now` (and tokens stored before
    /// tokens expired, which no longer sign anyone in); returns how many.
    pub fn prune_expired(&self, now: OffsetDateTime) -> Result<usize, AccessError> {
        let mut pruned = 0;
        for tree in [&self.tokens, &self.sign_in_codes] {
            for kv in tree.iter() {
                let (hash, value) = kv?;
                if StoredToken::unexpired(&value, now).is_none() {
                    tree.remove(hash)?;
                    pruned += 1;
                }
            }
        }
        self.flushed(pruned)
    }

    /// Revokes every token of `name`, and every sign-in code of theirs not yet redeemed;
    /// returns how many tokens there were.
    pub fn revoke_tokens(&self, name: &str) -> Result<usize, AccessError> {
        let mut revoked = 0;
        for (tree, counted) in [(&self.tokens, true), (&self.sign_in_codes, false)] {
            for kv in tree.iter() {
                let (hash, value) = kv?;
                if StoredToken::holder(&value) == name.as_bytes() {
                    tree.remove(hash)?;
                    revoked += usize::from(counted);
                }
            }
        }
        self.flushed(revoked)
    }

    /// Issues a one-time sign-in code for `name`, valid until `expires_at`: a link can carry
    /// it, since it signs in once ([`AccessStore::redeem_sign_in_code`]) and is then gone.
    pub fn issue_sign_in_code(
        &self,
        name: &str,
        expires_at: OffsetDateTime,
    ) -> Result<Token, AccessError> {
        self.issue_into(
            &self.sign_in_codes,
            Token::sign_in_code(),
            name,
            expires_at,
            None,
        )
    }

    /// Takes a sign-in code (it works once): the principal it was issued for, if it had not
    /// expired by `now`.
    pub fn redeem_sign_in_code(
        &self,
        code: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Principal>, AccessError> {
        let Some(value) = self.sign_in_codes.remove(hash_token(code))? else {
            return Ok(None);
        };
        self.db.flush()?;
        match StoredToken::unexpired(&value, now) {
            Some((name, _)) => self.principal(&name),
            None => Ok(None),
        }
    }

    /// The principal a presented token belongs to, and when the token expires, if it has not
    /// expired by `now`. A token stored before tokens expired (its value a bare name) counts
    /// as expired: it is re-issued, never trusted for ever.
    pub fn authenticate(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(Principal, OffsetDateTime)>, AccessError> {
        let Some(value) = self.tokens.get(hash_token(token))? else {
            return Ok(None);
        };
        let Some((name, expires_at)) = StoredToken::unexpired(&value, now) else {
            return Ok(None);
        };
        Ok(self.principal(&name)?.map(|p| (p, expires_at)))
    }

    /// Registers a workstation; its name must be new.
    pub fn register_workstation(&self, workstation: &Workstation) -> Result<(), AccessError> {
        if self
            .workstations()?
            .iter()
            .any(|w| w.name == workstation.name)
        {
            return Err(AccessError::Duplicate(format!(
                "workstation {}",
                workstation.name
            )));
        }
        self.workstations
            .insert(workstation.fingerprint.as_bytes(), encode(workstation))?;
        self.flushed(())
    }

    /// The registered workstation with this certificate fingerprint.
    pub fn workstation(&self, fingerprint: &str) -> Result<Option<Workstation>, AccessError> {
        lookup(&self.workstations, fingerprint)
    }

    /// Every registered workstation.
    pub fn workstations(&self) -> Result<Vec<Workstation>, AccessError> {
        all(&self.workstations)
    }

    /// Revokes the workstation called `name`: its certificate reads nothing from now on.
    pub fn revoke_workstation(
        &self,
        name: &str,
        at: time::OffsetDateTime,
    ) -> Result<Workstation, AccessError> {
        let mut ws = self
            .workstations()?
            .into_iter()
            .find(|w| w.name == name)
            .ok_or_else(|| AccessError::NotFound(format!("workstation {name}")))?;
        ws.revoked_at.get_or_insert(at);
        self.workstations
            .insert(ws.fingerprint.as_bytes(), encode(&ws))?;
        self.flushed(ws)
    }

    /// Stores a new access request.
    pub fn add_request(&self, request: &AccessRequest) -> Result<(), AccessError> {
        self.requests
            .insert(request.id.as_bytes(), encode(request))?;
        self.by_reviewer.insert(
            reviewer_key(&request.requester, &request.case_id, &request.id),
            &[],
        )?;
        self.flushed(())
    }

    /// Replaces `current` with `next` if nobody changed it meanwhile (two managers deciding
    /// the same request at once: one wins). Returns whether it was replaced.
    pub fn update_request(
        &self,
        current: &AccessRequest,
        next: &AccessRequest,
    ) -> Result<bool, AccessError> {
        let swapped = self.requests.compare_and_swap(
            current.id.as_bytes(),
            Some(encode(current)),
            Some(encode(next)),
        )?;
        self.flushed(swapped.is_ok())
    }

    /// The access request with this ID.
    pub fn request(&self, id: &str) -> Result<Option<AccessRequest>, AccessError> {
        lookup(&self.requests, id)
    }

    /// `requester`'s requests for `case_id`.
    pub fn requests_for(
        &self,
        requester: &str,
        case_id: &str,
    ) -> Result<Vec<AccessRequest>, AccessError> {
        let prefix = reviewer_key(requester, case_id, "");
        let mut found = Vec::new();
        for kv in self.by_reviewer.scan_prefix(prefix.as_slice()) {
            let (key, _) = kv?;
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            if let Some(request) = self.request(&id)? {
                found.push(request);
            }
        }
        Ok(found)
    }

    /// Every access request, newest first.
    pub fn requests(&self) -> Result<Vec<AccessRequest>, AccessError> {
        let mut requests: Vec<AccessRequest> = all(&self.requests)?;
        requests.sort_by_key(|r| std::cmp::Reverse(r.requested_at));
        Ok(requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::GrantState;
    use crate::principal::{Region, Role};
    use time::macros::datetime;
    use vigil_core::{Geography, ResourceId};

    fn alice() -> Principal {
        Principal {
            name: "alice".into(),
            role: Role::Reviewer,
            region: Region::Eea,
            resources: vec![],
        }
    }

    #[test]
    fn principals_tokens_and_workstations() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccessStore::open(dir.path()).unwrap();
        store.add_principal(&alice()).unwrap();
        assert!(matches!(
            store.add_principal(&alice()),
            Err(AccessError::Duplicate(_))
        ));
        let now = datetime!(2026-11-23 10:00 UTC);
        let expires = now + time::Duration::hours(12);
        let token = store.issue_token("alice", expires).unwrap();
        assert_eq!(
            store.authenticate(token.expose(), now).unwrap(),
            Some((alice(), expires))
        );
        assert_eq!(store.authenticate("vgl_nope", now).unwrap(), None);
        // Expired: no longer anyone's.
        assert_eq!(store.authenticate(token.expose(), expires).unwrap(), None);
        // A token stored before tokens expired is not trusted, and is pruned with the
        // expired ones; a valid one stays.
        let legacy = Token::generate();
        store
            .tokens
            .insert(legacy.hash(), b"alice".as_slice())
            .unwrap();
        assert_eq!(store.authenticate(legacy.expose(), now).unwrap(), None);
        let valid = store.issue_token("alice", expires).unwrap();
        let spent_code = store.issue_sign_in_code("alice", now).unwrap();
        assert_eq!(store.prune_expired(now).unwrap(), 2);
        assert!(store.tokens.get(legacy.hash()).unwrap().is_none());
        assert!(store
            .sign_in_codes
            .get(spent_code.hash())
            .unwrap()
            .is_none());
        assert!(store.authenticate(valid.expose(), now).unwrap().is_some());
        // Only the hash is on disk.
        drop(store);
        let store = AccessStore::open(dir.path()).unwrap();
        let needle = token.expose().as_bytes();
        for entry in std::fs::read_dir(dir.path().join("db")).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "the token itself is in {}",
                    path.display()
                );
            }
        }
        assert_eq!(store.revoke_tokens("alice").unwrap(), 2);
        assert_eq!(store.authenticate(token.expose(), now).unwrap(), None);
        let other = store.issue_token("alice", expires).unwrap();
        assert!(store.authenticate(other.expose(), now).unwrap().is_some());
        // A re-issue retires the token presented, and never outlives the session.
        let hour = time::Duration::hours(1);
        let (next, until) = store
            .reissue_token(other.expose(), now, hour, time::Duration::minutes(90))
            .unwrap()
            .unwrap();
        assert_eq!(until, now + hour);
        assert_eq!(store.authenticate(other.expose(), now).unwrap(), None);
        let later = now + time::Duration::minutes(50);
        let (last, until) = store
            .reissue_token(next.expose(), later, hour, time::Duration::days(9))
            .unwrap()
            .unwrap();
        assert_eq!(
            until,
            now + time::Duration::minutes(90),
            "capped by the session"
        );
        let over = now + time::Duration::minutes(91);
        assert!(store
            .reissue_token(last.expose(), over, hour, hour)
            .unwrap()
            .is_none());
        // A sign-in code works once, and not after it expires.
        let code = store.issue_sign_in_code("alice", expires).unwrap();
        assert_eq!(
            store.redeem_sign_in_code(code.expose(), now).unwrap(),
            Some(alice())
        );
        assert_eq!(store.redeem_sign_in_code(code.expose(), now).unwrap(), None);
        let late = store.issue_sign_in_code("alice", expires).unwrap();
        assert_eq!(
            store.redeem_sign_in_code(late.expose(), expires).unwrap(),
            None
        );
        // Revoking a principal's tokens takes their unredeemed codes too.
        let pending = store.issue_sign_in_code("alice", expires).unwrap();
        assert_eq!(store.revoke_tokens("alice").unwrap(), 1);
        assert_eq!(
            store.redeem_sign_in_code(pending.expose(), now).unwrap(),
            None
        );
        let other = store.issue_token("alice", expires).unwrap();
        store.remove_principal("alice").unwrap();
        assert_eq!(store.authenticate(other.expose(), now).unwrap(), None);
        // The name is not given out again: old grants would follow it.
        assert!(matches!(
            store.add_principal(&alice()),
            Err(AccessError::Invalid(_))
        ));

        let ws = Workstation {
            name: "ws-1".into(),
            fingerprint: "ab".repeat(32),
            issued_at: datetime!(2026-11-23 10:00 UTC),
            revoked_at: None,
        };
        store.register_workstation(&ws).unwrap();
        assert!(store.register_workstation(&ws).is_err());
        assert_eq!(
            store.workstation(&ws.fingerprint).unwrap(),
            Some(ws.clone())
        );
        let revoked = store
            .revoke_workstation("ws-1", datetime!(2026-11-23 11:00 UTC))
            .unwrap();
        assert!(revoked.revoked_at.is_some());
    }

    #[test]
    fn requests_are_found_per_reviewer_and_case_and_decided_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccessStore::open(dir.path()).unwrap();
        let request = |case: &str| AccessRequest {
            id: AccessRequest::new_id(),
            case_id: case.into(),
            geography: Geography::parse("eu").unwrap(),
            resource_id: ResourceId::parse("r").unwrap(),
            requester: "alice".into(),
            reason: "r".into(),
            requested_at: datetime!(2026-11-23 10:00 UTC),
            state: GrantState::Pending,
        };
        let (a, b) = (request("case-a"), request("case-b"));
        store.add_request(&a).unwrap();
        store.add_request(&b).unwrap();
        assert_eq!(
            store.requests_for("alice", "case-a").unwrap(),
            vec![a.clone()]
        );
        assert!(store.requests_for("bob", "case-a").unwrap().is_empty());
        let denied = AccessRequest {
            state: GrantState::Denied {
                by: "boss".into(),
                at: datetime!(2026-11-23 10:01 UTC),
            },
            ..a.clone()
        };
        assert!(store.update_request(&a, &denied).unwrap());
        // A second decision based on the stale pending request loses.
        assert!(!store.update_request(&a, &denied).unwrap());
        assert_eq!(store.request(&a.id).unwrap(), Some(denied));
        assert_eq!(store.requests().unwrap().len(), 2);
    }
}
