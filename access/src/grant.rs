//! Just-in-time access: a reviewer asks for one case, a manager who is not the requester
//! approves or denies, the grant runs from approval for a bounded time and can be revoked.
//!
//! The functions here are the rules, free of storage and HTTP: each returns the [`Refusal`]
//! that the API answers with and the audit log records.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use vigil_core::{Geography, ResourceId};

use crate::principal::{Principal, Region, Role};

/// Why a request was refused. The code is what the audit log records; the message is what
/// the caller reads. Neither ever says whether a record exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one that matches nobody.
    Unauthenticated,
    /// The caller's role may not do this.
    WrongRole,
    /// Content is read only from a registered workstation, over its client certificate.
    NoWorkstation,
    /// Too many point queries; try again later.
    RateLimited,
    /// A manager may not decide a request of their own.
    SelfApproval,
    /// The request was already decided.
    AlreadyDecided,
    /// The grant is not active, so it cannot be revoked.
    NotActive,
    /// The resource's home is in the EEA and the reviewer is not.
    EeaRule,
    /// The resource has content logging off: there is no content to grant.
    ContentLoggingOff,
    /// The caller holds no grant for this case.
    NoGrant,
    /// The caller's request for this case is still pending.
    GrantPending,
    /// The caller's grant for this case was denied.
    GrantDenied,
    /// The caller's grant for this case has expired.
    GrantExpired,
    /// The caller's grant for this case was revoked.
    GrantRevoked,
    /// The record is not readable under this grant: not flagged in this case, deleted,
    /// purged, or never stored. One answer for all of them.
    NotAvailable,
    /// No such case (or access request).
    UnknownCase,
    /// A customer may act only on their own resources.
    NotOwner,
    /// The approver asked for a grant longer than the configured maximum.
    GrantTooLong,
    /// The audit log could not record the request, so it was not carried out.
    AuditUnavailable,
}

impl Refusal {
    /// The stable code the audit log and the API's error body carry.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::WrongRole => "wrong_role",
            Refusal::NoWorkstation => "no_workstation",
            Refusal::RateLimited => "rate_limited",
            Refusal::SelfApproval => "self_approval",
            Refusal::AlreadyDecided => "already_decided",
            Refusal::NotActive => "not_active",
            Refusal::EeaRule => "eea_rule",
            Refusal::ContentLoggingOff => "content_logging_off",
            Refusal::NoGrant => "no_grant",
            Refusal::GrantPending => "grant_pending",
            Refusal::GrantDenied => "grant_denied",
            Refusal::GrantExpired => "grant_expired",
            Refusal::GrantRevoked => "grant_revoked",
            Refusal::NotAvailable => "not_available",
            Refusal::UnknownCase => "unknown_case",
            Refusal::NotOwner => "not_owner",
            Refusal::GrantTooLong => "grant_too_long",
            Refusal::AuditUnavailable => "audit_unavailable",
        }
    }

    /// A sentence for the caller.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "a valid, unexpired API token is required (Authorization: Bearer TOKEN)",
            Refusal::WrongRole => "your role may not do this",
            Refusal::NoWorkstation => "content can only be read from a registered secure workstation, over its client certificate",
            Refusal::RateLimited => "too many point queries; wait and try again",
            Refusal::SelfApproval => "a manager may not approve or deny their own request",
            Refusal::AlreadyDecided => "this request was already decided",
            Refusal::NotActive => "this grant is not active",
            Refusal::EeaRule => "this resource's data is in the EEA and is readable only by reviewers located in the EEA",
            Refusal::ContentLoggingOff => "this resource has content logging off: no prompts or completions are stored, so there is nothing to grant",
            Refusal::NoGrant => "you hold no grant for this case; request access first",
            Refusal::GrantPending => "your access request for this case is still pending a manager's decision",
            Refusal::GrantDenied => "your access request for this case was denied",
            Refusal::GrantExpired => "your grant for this case has expired",
            Refusal::GrantRevoked => "your grant for this case was revoked",
            Refusal::NotAvailable => "no record is available under this grant with that case and request ID",
            Refusal::UnknownCase => "no such case",
            Refusal::NotOwner => "you may act only on resources you own",
            Refusal::GrantTooLong => "duration_secs is longer than the configured maximum grant",
            Refusal::AuditUnavailable => "the audit log cannot record this request, so it was not carried out",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Where an access request stands, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum GrantState {
    /// Waiting for a manager.
    Pending,
    /// Approved: readable until `expires_at`.
    Approved {
        /// The manager who approved.
        by: String,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
        /// When the grant ends.
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
    },
    /// Denied.
    Denied {
        /// The manager who denied.
        by: String,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Approved, then revoked before it expired.
    Revoked {
        /// Who revoked it.
        by: String,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
        /// The manager who had approved it.
        approved_by: String,
    },
}

/// Where an access request stands now, expiry taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    /// Waiting for a manager.
    Pending,
    /// Readable now.
    Active,
    /// Its time ran out.
    Expired,
    /// Denied.
    Denied,
    /// Revoked.
    Revoked,
}

impl GrantStatus {
    /// Every status.
    pub const ALL: [GrantStatus; 5] = [
        GrantStatus::Pending,
        GrantStatus::Active,
        GrantStatus::Expired,
        GrantStatus::Denied,
        GrantStatus::Revoked,
    ];

    /// The status's name, as the API writes it.
    pub fn name(self) -> &'static str {
        match self {
            GrantStatus::Pending => "pending",
            GrantStatus::Active => "active",
            GrantStatus::Expired => "expired",
            GrantStatus::Denied => "denied",
            GrantStatus::Revoked => "revoked",
        }
    }

    /// Parses a status name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The refusal a point query under a grant in this status gets, if any.
    pub fn refusal(self) -> Option<Refusal> {
        match self {
            GrantStatus::Active => None,
            GrantStatus::Pending => Some(Refusal::GrantPending),
            GrantStatus::Expired => Some(Refusal::GrantExpired),
            GrantStatus::Denied => Some(Refusal::GrantDenied),
            GrantStatus::Revoked => Some(Refusal::GrantRevoked),
        }
    }
}

/// One reviewer's request for access to one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    /// `acc-` and 16 hex digits.
    pub id: String,
    /// The case it covers, and only that case.
    pub case_id: String,
    /// The case's geography.
    pub geography: Geography,
    /// The case's resource.
    pub resource_id: ResourceId,
    /// The reviewer who asked.
    pub requester: String,
    /// Why, in the reviewer's words.
    pub reason: String,
    /// When the request was made.
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    /// Its state.
    #[serde(flatten)]
    pub state: GrantState,
}

/// The longest reason a reviewer may give, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

impl AccessRequest {
    /// Where the request stands at `now`.
    pub fn status(&self, now: OffsetDateTime) -> GrantStatus {
        match &self.state {
            GrantState::Pending => GrantStatus::Pending,
            GrantState::Approved { expires_at, .. } if now < *expires_at => GrantStatus::Active,
            GrantState::Approved { .. } => GrantStatus::Expired,
            GrantState::Denied { .. } => GrantStatus::Denied,
            GrantState::Revoked { .. } => GrantStatus::Revoked,
        }
    }

    /// When an approved grant ends.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        match self.state {
            GrantState::Approved { expires_at, .. } => Some(expires_at),
            _ => None,
        }
    }

    /// Whether this is a valid request ID (`acc-` and 16 lowercase hex digits).
    pub fn is_valid_id(id: &str) -> bool {
        id.len() == 20
            && id.starts_with("acc-")
            && id[4..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// A fresh random request ID.
    pub fn new_id() -> String {
        format!("acc-{:016x}", rand::random::<u64>())
    }
}

/// The region rule: an EEA resource's data is for EEA reviewers only.
pub fn check_region(reviewer: &Principal, resource_in_eea: bool) -> Result<(), Refusal> {
    if resource_in_eea && reviewer.region != Region::Eea {
        Err(Refusal::EeaRule)
    } else {
        Ok(())
    }
}

/// Whether `requester` may ask for access to a case of a resource: a reviewing role, the
/// region rule, and content to grant.
pub fn check_request(
    requester: &Principal,
    resource_in_eea: bool,
    content_logging: bool,
) -> Result<(), Refusal> {
    if !requester.role.reviews() {
        return Err(Refusal::WrongRole);
    }
    check_region(requester, resource_in_eea)?;
    if !content_logging {
        return Err(Refusal::ContentLoggingOff);
    }
    Ok(())
}

/// Whether `manager` may approve or deny `request` for `requester` (the requester as the
/// store knows them now; a deleted or moved requester is checked as they are).
pub fn check_decision(
    manager: &Principal,
    request: &AccessRequest,
    requester: Option<&Principal>,
    resource_in_eea: bool,
    content_logging: bool,
    approving: bool,
) -> Result<(), Refusal> {
    if manager.role != Role::Manager {
        return Err(Refusal::WrongRole);
    }
    if manager.name == request.requester {
        return Err(Refusal::SelfApproval);
    }
    if request.state != GrantState::Pending {
        return Err(Refusal::AlreadyDecided);
    }
    if approving {
        // A grant that breaks the rules is never created, even if the request slipped in
        // before a rule changed (the resource's logging turned off, the reviewer moved).
        let requester = requester.ok_or(Refusal::WrongRole)?;
        check_request(requester, resource_in_eea, content_logging)?;
    }
    Ok(())
}

/// The grant's length: the configured default, or what the approver asks for up to the cap.
pub fn grant_length(
    asked_secs: Option<u64>,
    default_secs: u64,
    max_secs: u64,
) -> Result<Duration, Refusal> {
    let secs = asked_secs.unwrap_or(default_secs).max(1);
    if secs > max_secs {
        return Err(Refusal::GrantTooLong);
    }
    Ok(Duration::seconds(secs as i64))
}

/// The caller's standing for a case, from all their requests for it: active if any grant is;
/// otherwise the refusal of the most recent one.
pub fn standing<'a>(
    requests: impl IntoIterator<Item = &'a AccessRequest>,
    now: OffsetDateTime,
) -> Result<&'a AccessRequest, Refusal> {
    let mut latest: Option<&AccessRequest> = None;
    for request in requests {
        if request.status(now) == GrantStatus::Active {
            return Ok(request);
        }
        if latest.is_none_or(|l| request.requested_at >= l.requested_at) {
            latest = Some(request);
        }
    }
    Err(latest
        .and_then(|r| r.status(now).refusal())
        .unwrap_or(Refusal::NoGrant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn person(name: &str, role: Role, region: Region) -> Principal {
        Principal {
            name: name.into(),
            role,
            region,
            resources: vec![],
        }
    }

    fn request(requester: &str, state: GrantState) -> AccessRequest {
        AccessRequest {
            id: AccessRequest::new_id(),
            case_id: "case-1".into(),
            geography: Geography::parse("eu").unwrap(),
            resource_id: ResourceId::parse("res").unwrap(),
            requester: requester.into(),
            reason: "looking".into(),
            requested_at: datetime!(2026-11-23 10:00 UTC),
            state,
        }
    }

    #[test]
    fn region_and_content_logging_rules() {
        let us = person("u", Role::Reviewer, Region::NonEea);
        let eu = person("e", Role::Reviewer, Region::Eea);
        assert_eq!(check_request(&us, true, true), Err(Refusal::EeaRule));
        assert_eq!(check_request(&eu, true, true), Ok(()));
        assert_eq!(check_request(&us, false, true), Ok(()));
        assert_eq!(
            check_request(&eu, true, false),
            Err(Refusal::ContentLoggingOff)
        );
        let admin = person("a", Role::Admin, Region::Eea);
        assert_eq!(check_request(&admin, false, true), Err(Refusal::WrongRole));
    }

    #[test]
    fn decisions_need_another_manager_and_a_pending_request() {
        let boss = person("boss", Role::Manager, Region::Eea);
        let rev = person("rev", Role::Reviewer, Region::NonEea);
        let pending = request("rev", GrantState::Pending);
        assert_eq!(
            check_decision(&boss, &pending, Some(&rev), false, true, true),
            Ok(())
        );
        // The non-EEA reviewer cannot even be granted EEA data.
        assert_eq!(
            check_decision(&boss, &pending, Some(&rev), true, true, true),
            Err(Refusal::EeaRule)
        );
        // Denying it is fine.
        assert_eq!(
            check_decision(&boss, &pending, Some(&rev), true, true, false),
            Ok(())
        );
        let own = request("boss", GrantState::Pending);
        assert_eq!(
            check_decision(&boss, &own, Some(&boss), false, true, true),
            Err(Refusal::SelfApproval)
        );
        assert_eq!(
            check_decision(&rev, &pending, Some(&rev), false, true, true),
            Err(Refusal::WrongRole)
        );
        let denied = request(
            "rev",
            GrantState::Denied {
                by: "boss".into(),
                at: datetime!(2026-11-23 10:05 UTC),
            },
        );
        assert_eq!(
            check_decision(&boss, &denied, Some(&rev), false, true, true),
            Err(Refusal::AlreadyDecided)
        );
    }

    #[test]
    fn grants_expire_and_standing_prefers_an_active_one() {
        let approved = request(
            "rev",
            GrantState::Approved {
                by: "boss".into(),
                at: datetime!(2026-11-23 10:05 UTC),
                expires_at: datetime!(2026-11-23 11:05 UTC),
            },
        );
        assert_eq!(
            approved.status(datetime!(2026-11-23 11:04:59 UTC)),
            GrantStatus::Active
        );
        assert_eq!(
            approved.status(datetime!(2026-11-23 11:05 UTC)),
            GrantStatus::Expired
        );
        let mut later = request("rev", GrantState::Pending);
        later.requested_at = datetime!(2026-11-23 12:00 UTC);
        let at = datetime!(2026-11-23 10:30 UTC);
        assert_eq!(standing([&later, &approved], at).unwrap().id, approved.id);
        let after = datetime!(2026-11-23 12:30 UTC);
        assert_eq!(
            standing([&approved, &later], after).unwrap_err(),
            Refusal::GrantPending
        );
        assert_eq!(standing([], after).unwrap_err(), Refusal::NoGrant);
    }

    #[test]
    fn grant_lengths_are_capped() {
        assert_eq!(grant_length(None, 3600, 7200), Ok(Duration::hours(1)));
        assert_eq!(
            grant_length(Some(600), 3600, 7200),
            Ok(Duration::minutes(10))
        );
        assert_eq!(
            grant_length(Some(7201), 3600, 7200),
            Err(Refusal::GrantTooLong)
        );
        assert_eq!(grant_length(Some(0), 3600, 7200), Ok(Duration::seconds(1)));
    }

    #[test]
    fn request_ids() {
        let id = AccessRequest::new_id();
        assert!(AccessRequest::is_valid_id(&id), "{id}");
        for bad in ["acc-xyz", "acc-0123456789ABCDEF", "../etc/passwd", ""] {
            assert!(!AccessRequest::is_valid_id(bad), "{bad}");
        }
    }
}
