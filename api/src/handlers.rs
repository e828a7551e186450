//! The handlers of [`crate::routes::OPERATIONS`]. Each is a thin shell: it runs its body and
//! hands the result to [`Attempt::finish`], which audits it.

use std::sync::Arc;

use axum::extract::{Path, Query};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use vigil_access::grant::{self, MAX_REASON_CHARS};
use vigil_access::{AccessRequest, GrantState, GrantStatus, Outcome, Principal, Refusal, Role};
use vigil_core::decision::MAX_NOTE_CHARS;
use vigil_core::{Case, Day, Decision, DecisionOutcome, RequestId, Resource, ResourceId, Verdict};
use vigil_storage::geo::ReviewText;
use vigil_storage::GeoStore;

use crate::attempt::{Attempt, Body, Lenient};
use crate::cluster::{
    CaseData, DeletionDone, ForwardedDecision, ForwardedDeletion, ForwardedRead, OpenedRecord,
};
use crate::error::ApiError;
use crate::place::{blocking, Found, Place};
use crate::AppState;

type Answer = Result<Response, ApiError>;

const REVIEWERS: &[Role] = &[Role::Reviewer, Role::Manager];
const MANAGERS: &[Role] = &[Role::Manager];
const RESOURCE_MANAGERS: &[Role] = &[Role::Admin, Role::Customer];

fn ok(status: StatusCode, body: Value) -> Answer {
    Ok((status, Json(body)).into_response())
}

/// Case IDs are `case-` and hex digits; anything else is refused before any lookup.
fn case_id(raw: &str) -> Result<&str, ApiError> {
    let valid = (6..=64).contains(&raw.len())
        && raw.starts_with("case-")
        && raw[5..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        Ok(raw)
    } else {
        Err(ApiError::invalid(
            "case_id",
            "must be `case-` followed by letters, digits or dashes (at most 64 characters)",
        ))
    }
}

fn request_id(raw: &str) -> Result<RequestId, ApiError> {
    RequestId::parse(raw).map_err(|e| ApiError::invalid("request_id", e))
}

fn access_request_id(raw: &str) -> Result<&str, ApiError> {
    if AccessRequest::is_valid_id(raw) {
        Ok(raw)
    } else {
        Err(ApiError::invalid(
            "request_id",
            "must be `acc-` followed by 16 lowercase hex digits",
        ))
    }
}

fn resource_id(raw: &str) -> Result<ResourceId, ApiError> {
    ResourceId::parse(raw).map_err(|e| ApiError::invalid("resource_id", e))
}

impl AppState {
    pub(crate) fn resource(&self, id: &str) -> Option<Resource> {
        self.registry
            .read()
            .expect("registry lock poisoned")
            .get(id)
            .cloned()
    }

    fn is_eea(&self, resource: &Resource) -> bool {
        self.access_config.is_eea(resource.geography.as_str())
    }

    pub(crate) fn store_of(&self, resource: &Resource) -> Result<Arc<GeoStore>, ApiError> {
        self.stores
            .geo(&resource.geography)
            .map_err(ApiError::internal)
    }

    /// When a case stored on `day` becomes due for the retention purge: its records and it
    /// are deleted by the first scheduled purge after that.
    fn purge_due(&self, day: Day, case: &Case) -> time::OffsetDateTime {
        let days = match self.resource(case.resource_id.as_str()) {
            Some(resource) => self.retention.resource_days(&resource),
            None => self.retention.geography_days(case.geography.as_str()),
        };
        day.plus(days).start()
    }

    pub(crate) fn now(&self) -> time::OffsetDateTime {
        self.stores.clock().now()
    }
}

/// A case as reviewers see it: metadata, whether its resource has content to grant, when
/// retention purges it, what the LLM reviewer concluded (counted) and the human decisions.
/// Their notes are shown only when `noted` brings them opened, for a caller who may read the
/// case's content (see [`note_reader`]); otherwise they are withheld. Returns how many notes
/// the view shows.
fn case_view(
    state: &AppState,
    data: &CaseData,
    noted: Option<Vec<(Decision, ReviewText)>>,
) -> (Value, usize) {
    let case = &data.case;
    let decisions: Vec<Value> = match noted {
        Some(noted) => noted
            .iter()
            .map(|(d, note)| decision_view(d, Some(note)))
            .collect(),
        None => data
            .decisions
            .iter()
            .map(|d| decision_view(d, None))
            .collect(),
    };
    let shown = decisions
        .iter()
        .filter(|d| d["note_status"] == "shown")
        .count();
    let resource = state.resource(case.resource_id.as_str());
    let mut view = serde_json::to_value(case).expect("a case always encodes");
    view["content_logging"] = json!(resource.as_ref().is_none_or(|r| r.content_logging));
    view["eea"] = json!(resource.as_ref().is_some_and(|r| state.is_eea(r)));
    view["purge_due_at"] = json!(fmt_time(state.purge_due(data.day(), case)));
    view["llm_review"] = verdict_summary(case, &data.verdicts);
    view["decisions"] = json!(decisions);
    view["node"] = json!(data.node);
    (view, shown)
}

/// A human decision, with its note as opened (`None`: withheld, for callers who may not read
/// the case's content here). `note_status` says which: `shown`, `none` (no note was kept),
/// `unreadable` (its key is gone), or `withheld` (`note` is then null).
fn decision_view(decision: &Decision, note: Option<&ReviewText>) -> Value {
    let mut view = serde_json::to_value(decision).expect("a decision always encodes");
    let (note, status) = match note {
        None => (Value::Null, "withheld"),
        Some(ReviewText::Empty) => (json!(""), "none"),
        Some(ReviewText::Read(text)) => (json!(text), "shown"),
        Some(ReviewText::Unreadable) => (Value::Null, "unreadable"),
    };
    view["note"] = note;
    view["note_status"] = json!(status);
    view
}

/// The case's decisions with their notes opened, when the caller may read them: a note is
/// free text by someone who read the content, so it is shown under the rules of content (the
/// workstation listener, an active grant for the case, the region rule, content logging on),
/// and only on the node storing the case, whose data key opens it (a peer's notes stay
/// withheld). `None` otherwise; only vigil's own failures are errors.
async fn note_reader(
    attempt: &mut Attempt,
    caller: &Principal,
    case_id: &str,
) -> Result<Option<Vec<(Decision, ReviewText)>>, ApiError> {
    if attempt.workstation.is_none() {
        return Ok(None);
    }
    match under_grant(attempt, caller, case_id, None).await {
        Ok(Granted {
            place: Place::Here(store),
            resource,
            ..
        }) if resource.content_logging => {
            let id = case_id.to_owned();
            blocking(move || {
                store
                    .decisions_with_notes(&id, &resource)
                    .map_err(ApiError::internal)
            })
            .await
            .map(Some)
        }
        Ok(_) => Ok(None),
        Err(e) if e.code == "internal" => Err(e),
        Err(_) => Ok(None),
    }
}

/// What the LLM reviewer concluded on a case's sampled records, counted.
fn verdict_summary(case: &Case, verdicts: &[Verdict]) -> Value {
    let violations = verdicts
        .iter()
        .filter(|v| v.assessment.as_ref().is_some_and(|a| a.violation))
        .count();
    let escalated = verdicts
        .iter()
        .filter(|v| v.route == vigil_core::Route::Escalated)
        .count();
    json!({"sampled": case.sample.len(), "reviewed": verdicts.len(), "violations": violations,
        "escalated": escalated, "closed": verdicts.len() - escalated})
}

fn request_view(state: &AppState, request: &AccessRequest) -> Value {
    let mut view = serde_json::to_value(request).expect("an access request always encodes");
    view["status"] = json!(request.status(state.now()));
    view
}

pub async fn me(attempt: Attempt) -> Response {
    let result = (|| {
        let caller =
            attempt.require(&[Role::Reviewer, Role::Manager, Role::Admin, Role::Customer])?;
        ok(
            StatusCode::OK,
            json!({"name": caller.name, "role": caller.role, "region": caller.region,
                "resources": caller.resources, "workstation": attempt.workstation,
                "now": fmt_time(attempt.state.now()),
                "token_expires_at": attempt.token_expires_at.map(fmt_time)}),
        )
    })();
    attempt.finish(result).await
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInBody {
    #[serde(default)]
    code: String,
}

/// Anyone holding a one-time sign-in code (`vigil demo` prints links with one): the code's
/// principal gets a token, and the code is gone.
pub async fn sign_in(mut attempt: Attempt, body: Body<SignInBody>) -> Response {
    let result = async {
        let body = body.0?;
        let state = attempt.state.clone();
        let now = state.now();
        let principal = state
            .access
            .redeem_sign_in_code(body.code.trim(), now)
            .map_err(ApiError::internal)?
            .ok_or(Refusal::Unauthenticated)?;
        let expires_at = state.access_config.token_expiry(now);
        attempt.event.actor.clone_from(&principal.name);
        attempt.event.role = Some(principal.role.name().to_owned());
        attempt.event.detail = Some(format!("expires_at: {}", fmt_time(expires_at)));
        attempt.caller = Some(principal.clone());
        attempt.commit(Outcome::Done).await?;
        let token = state
            .access
            .issue_token(&principal.name, expires_at)
            .map_err(ApiError::internal)?;
        Ok(fresh_token(&token, expires_at))
    }
    .await;
    attempt.finish(result).await
}

/// A token's one showing: `no-store`, so no cache keeps it.
fn fresh_token(token: &vigil_access::Token, expires_at: time::OffsetDateTime) -> Response {
    let mut response = (
        StatusCode::CREATED,
        Json(json!({"token": token.expose(), "expires_at": fmt_time(expires_at)})),
    )
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// Any principal: a fresh token in place of the one presented, which stops working at once;
/// never past the end of the session (`access.session_max_secs` after its first token).
pub async fn reissue_token(mut attempt: Attempt) -> Response {
    let result = async {
        attempt.require(&[Role::Reviewer, Role::Manager, Role::Admin, Role::Customer])?;
        let state = attempt.state.clone();
        let presented = attempt.presented_token.clone().unwrap_or_default();
        attempt.commit(Outcome::Done).await?;
        let (ttl, session) = state.access_config.token_lifetimes();
        let (token, expires_at) = state
            .access
            .reissue_token(&presented, state.now(), ttl, session)
            .map_err(ApiError::internal)?
            .ok_or(Refusal::Unauthenticated)?;
        Ok(fresh_token(&token, expires_at))
    }
    .await;
    attempt.finish(result).await
}

/// Every case on every node: this node's and its peers', merged. When a peer did not
/// answer, `unreachable_nodes` names it (the list lacks its cases).
pub async fn list_cases(mut attempt: Attempt) -> Response {
    let result = async {
        attempt.require(REVIEWERS)?;
        let state = attempt.state.clone();
        let (found, missing) = state.cases_everywhere(&attempt.on_behalf()).await?;
        let cases: Vec<Value> = found
            .iter()
            .map(|data| case_view(&state, data, None).0)
            .collect();
        if !missing.is_empty() {
            attempt.add_detail(format!("nodes not answering: {}", missing.join(", ")));
        }
        ok(
            StatusCode::OK,
            json!({"cases": cases, "now": fmt_time(state.now()), "unreachable_nodes": missing}),
        )
    }
    .await;
    attempt.finish(result).await
}

pub async fn view_case(mut attempt: Attempt, raw: Lenient<Path<String>>) -> Response {
    let result = async {
        let (caller, id) = reviewer_on_case(&mut attempt, raw)?;
        let state = attempt.state.clone();
        let found = state.locate_case(&id, &attempt.on_behalf()).await?.ok_or(Refusal::UnknownCase)?;
        attempt.event.resource_id = Some(found.data.case.resource_id.to_string());
        answered_by(&mut attempt, &found);
        let requests = state
            .access
            .requests_for(&caller.name, &id)
            .map_err(ApiError::internal)?;
        let granted = grant::standing(&requests, state.now());
        let noted = match &granted {
            Ok(_) => note_reader(&mut attempt, &caller, &id).await?,
            Err(_) => None,
        };
        let (mut view, shown) = case_view(&state, &found.data, noted);
        let verdicts: Vec<Value> = found
            .data
            .verdicts
            .iter()
            .map(|v| {
                let mut v = serde_json::to_value(v).expect("a verdict always encodes");
                // The model's own words stay out of the API, as out of the exports.
                if let Some(a) = v.get_mut("assessment").and_then(Value::as_object_mut) {
                    a.remove("rationale");
                }
                v
            })
            .collect();
        let standing = match &granted {
            Ok(active) => {
                json!({"status": "active", "access_request": active.id, "expires_at": active.expires_at().map(fmt_time)})
            }
            Err(refusal) => json!({"status": refusal.code()}),
        };
        view["verdicts"] = json!(verdicts);
        view["your_access"] = standing;
        view["now"] = json!(fmt_time(state.now()));
        if shown > 0 {
            // Notes were written by someone who read the content: showing them is a content
            // read, on record before they leave (never the notes themselves).
            attempt.add_detail(format!("decision notes shown: {shown}"));
            attempt.commit(Outcome::Granted).await?;
        }
        ok(StatusCode::OK, view)
    }
    .await;
    attempt.finish(result).await
}

/// Notes in the audit entry which node answered, when it was not this one.
fn answered_by(attempt: &mut Attempt, found: &Found) {
    if let Place::Peer(peer) = &found.place {
        attempt.add_detail(format!("answered by node {}", peer.name));
    }
}

/// The calling reviewer or manager, and the case the path names (noted in the audit entry).
fn reviewer_on_case(
    attempt: &mut Attempt,
    raw: Lenient<Path<String>>,
) -> Result<(Principal, String), ApiError> {
    let caller = attempt.require(REVIEWERS)?.clone();
    let Path(raw) = raw.0?;
    let id = case_id(&raw)?.to_owned();
    attempt.event.case_id = Some(id.clone());
    Ok((caller, id))
}

fn fmt_time(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("a UTC time always formats")
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[serde(default)]
    reason: String,
}

pub async fn request_access(
    mut attempt: Attempt,
    raw: Lenient<Path<String>>,
    body: Body<ReasonBody>,
) -> Response {
    let result = async {
        let (caller, id) = reviewer_on_case(&mut attempt, raw)?;
        let reason = body.0?.reason;
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(ApiError::invalid(
                "reason",
                format!("must be 1-{MAX_REASON_CHARS} characters"),
            ));
        }
        let state = attempt.state.clone();
        let case = state
            .locate_case(&id, &attempt.on_behalf())
            .await?
            .ok_or(Refusal::UnknownCase)?
            .data
            .case;
        attempt.event.resource_id = Some(case.resource_id.to_string());
        let resource = state
            .resource(case.resource_id.as_str())
            .ok_or(Refusal::UnknownCase)?;
        grant::check_request(&caller, state.is_eea(&resource), resource.content_logging)?;
        let request = AccessRequest {
            id: AccessRequest::new_id(),
            case_id: id,
            geography: case.geography.clone(),
            resource_id: case.resource_id.clone(),
            requester: caller.name.clone(),
            reason: reason.to_owned(),
            requested_at: state.now(),
            state: GrantState::Pending,
        };
        attempt.event.access_request = Some(request.id.clone());
        attempt.event.detail = Some(format!("reason: {}", request.reason));
        attempt.commit(Outcome::Done).await?;
        state
            .access
            .add_request(&request)
            .map_err(ApiError::internal)?;
        ok(StatusCode::CREATED, request_view(&state, &request))
    }
    .await;
    attempt.finish(result).await
}

#[derive(Deserialize)]
pub struct ListFilter {
    state: Option<String>,
}

pub async fn list_requests(attempt: Attempt, filter: Lenient<Query<ListFilter>>) -> Response {
    let result = (|| {
        let caller = attempt.require(REVIEWERS)?;
        let Query(filter) = filter.0?;
        let wanted = match filter.state.as_deref() {
            None => None,
            Some(name) => Some(GrantStatus::parse(name).ok_or_else(|| {
                ApiError::invalid(
                    "state",
                    "must be pending, active, expired, denied or revoked",
                )
            })?),
        };
        let now = attempt.state.now();
        let requests: Vec<Value> = attempt
            .state
            .access
            .requests()
            .map_err(ApiError::internal)?
            .iter()
            .filter(|r| caller.role == Role::Manager || r.requester == caller.name)
            .filter(|r| wanted.is_none_or(|w| r.status(now) == w))
            .map(|r| request_view(&attempt.state, r))
            .collect();
        ok(StatusCode::OK, json!({"access_requests": requests}))
    })();
    attempt.finish(result).await
}

/// Loads an access request the caller may see: their own, or any for a manager. Others'
/// requests are answered as unknown.
fn visible_request(attempt: &mut Attempt, raw: &str) -> Result<AccessRequest, ApiError> {
    let caller = attempt.require(REVIEWERS)?.clone();
    let id = access_request_id(raw)?;
    attempt.event.access_request = Some(id.to_owned());
    let request = attempt
        .state
        .access
        .request(id)
        .map_err(ApiError::internal)?
        .filter(|r| caller.role == Role::Manager || r.requester == caller.name)
        .ok_or(Refusal::UnknownCase)?;
    attempt.event.case_id = Some(request.case_id.clone());
    attempt.event.resource_id = Some(request.resource_id.to_string());
    Ok(request)
}

pub async fn view_request(mut attempt: Attempt, raw: Lenient<Path<String>>) -> Response {
    let result = raw
        .0
        .and_then(|Path(raw)| visible_request(&mut attempt, &raw))
        .and_then(|r| ok(StatusCode::OK, request_view(&attempt.state, &r)));
    attempt.finish(result).await
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    duration_secs: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    note: Option<String>,
}

/// Approves (`Some(duration)`) or denies (`None`) a pending request.
async fn decide(attempt: &mut Attempt, raw: &str, approve: Option<Option<u64>>) -> Answer {
    let manager = attempt.require(MANAGERS)?.clone();
    let request = visible_request(attempt, raw)?;
    let state = attempt.state.clone();
    let resource = state.resource(request.resource_id.as_str());
    let requester = state
        .access
        .principal(&request.requester)
        .map_err(ApiError::internal)?;
    grant::check_decision(
        &manager,
        &request,
        requester.as_ref(),
        resource.as_ref().is_some_and(|r| state.is_eea(r)),
        resource.as_ref().is_some_and(|r| r.content_logging),
        approve.is_some(),
    )?;
    let now = state.now();
    let next_state = match approve {
        Some(asked) => {
            let length = grant::grant_length(
                asked,
                state.access_config.grant_secs,
                state.access_config.max_grant_secs,
            )?;
            GrantState::Approved {
                by: manager.name.clone(),
                at: now,
                expires_at: now + length,
            }
        }
        None => GrantState::Denied {
            by: manager.name.clone(),
            at: now,
        },
    };
    let next = AccessRequest {
        state: next_state,
        ..request.clone()
    };
    if let Some(expires) = next.expires_at() {
        attempt.event.detail = Some(format!("expires_at: {}", fmt_time(expires)));
    }
    attempt.commit(Outcome::Done).await?;
    if !state
        .access
        .update_request(&request, &next)
        .map_err(ApiError::internal)?
    {
        return Err(Refusal::AlreadyDecided.into());
    }
    ok(StatusCode::OK, request_view(&state, &next))
}

pub async fn approve(
    mut attempt: Attempt,
    raw: Lenient<Path<String>>,
    body: Body<ApproveBody>,
) -> Response {
    let result = async {
        let Path(raw) = raw.0?;
        let asked = body.0?.duration_secs;
        decide(&mut attempt, &raw, Some(asked)).await
    }
    .await;
    attempt.finish(result).await
}

pub async fn deny(
    mut attempt: Attempt,
    raw: Lenient<Path<String>>,
    body: Body<NoteBody>,
) -> Response {
    let result = async {
        let Path(raw) = raw.0?;
        if let Some(note) = body.0?.note.filter(|n| !n.trim().is_empty()) {
            if note.chars().count() > MAX_REASON_CHARS {
                return Err(ApiError::invalid(
                    "note",
                    format!("at most {MAX_REASON_CHARS} characters"),
                ));
            }
            attempt.event.detail = Some(format!("note: {note}"));
        }
        decide(&mut attempt, &raw, None).await
    }
    .await;
    attempt.finish(result).await
}

pub async fn revoke(mut attempt: Attempt, raw: Lenient<Path<String>>) -> Response {
    let result = async {
        let caller = attempt.require(REVIEWERS)?.clone();
        let Path(raw) = raw.0?;
        let request = visible_request(&mut attempt, &raw)?;
        // The holder may give a grant up; otherwise only a manager revokes.
        if caller.role != Role::Manager && caller.name != request.requester {
            return Err(Refusal::WrongRole.into());
        }
        let state = attempt.state.clone();
        let now = state.now();
        let GrantState::Approved { by, .. } = &request.state else {
            return Err(Refusal::NotActive.into());
        };
        if request.status(now) != GrantStatus::Active {
            return Err(Refusal::NotActive.into());
        }
        let next = AccessRequest {
            state: GrantState::Revoked {
                by: caller.name.clone(),
                at: now,
                approved_by: by.clone(),
            },
            ..request.clone()
        };
        attempt.commit(Outcome::Done).await?;
        if !state
            .access
            .update_request(&request, &next)
            .map_err(ApiError::internal)?
        {
            return Err(Refusal::NotActive.into());
        }
        ok(StatusCode::OK, request_view(&state, &next))
    }
    .await;
    attempt.finish(result).await
}

/// What an active grant opens: the grant (its case, resource and geography), where the case
/// is stored, and its resource.
struct Granted {
    grant: AccessRequest,
    place: Place,
    resource: Resource,
}

/// The rules every action under a grant shares: the caller holds an active grant for
/// `case_id`, the case is still stored under the grant's resource, `request` (if given) is
/// flagged in it, and the region rule holds. Fills in the audit entry's grant and resource.
/// Anything no longer there is `not_available`, said the same way for every cause.
/// The case may be on another node: it is looked up there, and the entry says which node
/// answered. A case a peer answered for before is not looked up again: that peer checks the
/// case, the flag and the resource itself when it is asked for the record or the decision.
async fn under_grant(
    attempt: &mut Attempt,
    caller: &Principal,
    case_id: &str,
    request: Option<&RequestId>,
) -> Result<Granted, ApiError> {
    let state = attempt.state.clone();
    let requests = state
        .access
        .requests_for(&caller.name, case_id)
        .map_err(ApiError::internal)?;
    let grant = grant::standing(&requests, state.now())?.clone();
    attempt.event.access_request = Some(grant.id.clone());
    attempt.event.resource_id = Some(grant.resource_id.to_string());
    // A case stored here, or one a peer answered for before, is not looked up on the peers.
    let matches = |case: &Case| {
        case.resource_id == grant.resource_id
            && case.geography == grant.geography
            && flagged(case, request)
    };
    let remembered = || state.cluster.as_ref().and_then(|c| c.remembered(case_id));
    let place = match state.case_here(case_id).await? {
        Some((store, case)) if matches(&case) => Place::Here(store),
        Some(_) => return Err(Refusal::NotAvailable.into()),
        None => match remembered() {
            Some(peer) => Place::Peer(peer),
            None => {
                let found = state
                    .locate_case(case_id, &attempt.on_behalf())
                    .await?
                    .ok_or(Refusal::NotAvailable)?;
                if !matches(&found.data.case) {
                    return Err(Refusal::NotAvailable.into());
                }
                found.place
            }
        },
    };
    if let Place::Peer(peer) = &place {
        attempt.add_detail(format!("answered by node {}", peer.name));
    }
    let resource = state
        .resource(grant.resource_id.as_str())
        .ok_or(Refusal::NotAvailable)?;
    grant::check_region(caller, state.is_eea(&resource))?;
    Ok(Granted {
        grant,
        place,
        resource,
    })
}

/// Whether `request` (if one is named) is among the records flagged in `case`.
pub(crate) fn flagged(case: &Case, request: Option<&RequestId>) -> bool {
    request.is_none_or(|r| case.sample.contains(r))
}

/// A flagged record's content as a point query returns it, from this node's `store`. Gone,
/// never kept, destroyed, or its key shredded or revoked: all said the same way.
pub(crate) fn open_record(
    store: &GeoStore,
    resource: &Resource,
    request_id: &RequestId,
) -> Result<OpenedRecord, ApiError> {
    if !resource.content_logging {
        return Err(Refusal::ContentLoggingOff.into());
    }
    let record = match store.get(resource, request_id) {
        Ok(Some(record)) => record,
        Ok(None) => return Err(Refusal::NotAvailable.into()),
        Err(vigil_storage::StorageError::Decrypt { .. } | vigil_storage::StorageError::Key(_)) => {
            return Err(Refusal::NotAvailable.into())
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let content = record.content.ok_or(Refusal::NotAvailable)?;
    Ok(OpenedRecord {
        stored_at: fmt_time(record.stored_at),
        model: record.meta.model,
        prompt: content.prompt,
        completion: content.completion,
    })
}

pub async fn read_record(mut attempt: Attempt, raw: Lenient<Path<(String, String)>>) -> Response {
    let result = async {
        // The IDs named go into the entry first, so that every refusal records them.
        let Path((raw_case, raw_request)) = raw.0?;
        let id = case_id(&raw_case)?.to_owned();
        attempt.event.case_id = Some(id.clone());
        let request_id = request_id(&raw_request)?;
        attempt.event.request_id = Some(request_id.to_string());
        let caller = attempt.require(REVIEWERS)?.clone();
        attempt.require_workstation()?;
        let state = attempt.state.clone();
        if let Err(wait) = state.limiter.check(&caller.name) {
            let mut e = ApiError::from(Refusal::RateLimited);
            e.retry_after = Some(wait.as_secs().max(1));
            return Err(e);
        }
        let Granted {
            grant,
            place,
            resource,
        } = under_grant(&mut attempt, &caller, &id, Some(&request_id)).await?;
        if !resource.content_logging {
            return Err(Refusal::ContentLoggingOff.into());
        }
        let record = match place {
            Place::Here(store) => open_record(&store, &resource, &request_id)?,
            Place::Peer(owner) => {
                let read = ForwardedRead {
                    case_id: id.clone(),
                    request_id: request_id.to_string(),
                    resource_id: resource.id.to_string(),
                    reviewer: caller.name.clone(),
                    role: caller.role.name().to_owned(),
                    access_request: grant.id.clone(),
                    workstation: attempt.workstation.clone(),
                };
                let cluster = state.cluster.clone().ok_or(Refusal::NotAvailable)?;
                let asked = owner.name.clone();
                let (answered, record) = blocking(move || cluster.read(&owner, &read)).await?;
                if answered.name != asked {
                    attempt.add_detail(format!(
                        "the case moved: answered by node {}",
                        answered.name
                    ));
                }
                record
            }
        };
        let expires_at = grant.expires_at();
        attempt.commit(Outcome::Granted).await?;
        let body = json!({
            "case_id": id,
            "request_id": request_id,
            "resource_id": grant.resource_id,
            "geography": grant.geography,
            "stored_at": record.stored_at,
            "model": record.model,
            "prompt": record.prompt,
            "completion": record.completion,
            "grant": {"access_request": grant.id, "expires_at": expires_at.map(fmt_time)},
            "watermark": {"reviewer": caller.name, "read_at": fmt_time(state.now()),
                "workstation": attempt.workstation},
        });
        let mut response = (StatusCode::OK, Json(body)).into_response();
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        Ok(response)
    }
    .await;
    attempt.finish(result).await
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    note: String,
}

pub async fn record_decision(
    mut attempt: Attempt,
    raw: Lenient<Path<String>>,
    body: Body<DecisionBody>,
) -> Response {
    let result = async {
        let (caller, id) = reviewer_on_case(&mut attempt, raw)?;
        let body = body.0?;
        let outcome = DecisionOutcome::parse(body.decision.trim()).ok_or_else(|| {
            ApiError::invalid(
                "decision",
                "must be abuse_confirmed, false_positive or needs_escalation",
            )
        })?;
        let note = body.note.trim();
        if note.chars().count() > MAX_NOTE_CHARS {
            return Err(ApiError::invalid(
                "note",
                format!("at most {MAX_NOTE_CHARS} characters"),
            ));
        }
        let request_id = body.request_id.as_deref().map(request_id).transpose()?;
        attempt.event.request_id = request_id.as_ref().map(ToString::to_string);
        // Deciding needs what reading needs: an active grant for the case, and the region.
        let Granted {
            grant,
            place,
            resource,
        } = under_grant(&mut attempt, &caller, &id, request_id.as_ref()).await?;
        // A note is text about content: none is kept for a resource that keeps no content.
        if !note.is_empty() && !resource.content_logging {
            return Err(ApiError::invalid(
                "note",
                "must be empty: this resource has content logging off, so no note is kept",
            ));
        }
        let state = attempt.state.clone();
        let now = state.now();
        let decision = Decision {
            decision_id: Decision::new_id(now),
            case_id: id,
            request_id,
            resource_id: grant.resource_id.clone(),
            geography: grant.geography.clone(),
            reviewer: caller.name.clone(),
            outcome,
            note: note.to_owned(),
            decided_at: now,
            access_request: grant.id.clone(),
        };
        // The note stays out of the audit log: its author read the content.
        attempt.add_detail(format!(
            "decision: {} ({})",
            outcome.name(),
            decision.decision_id
        ));
        attempt.commit(Outcome::Done).await?;
        let stored = match place {
            Place::Here(store) => {
                let decision = decision.clone();
                blocking(move || store_decision(&store, &decision, &resource)).await?
            }
            Place::Peer(owner) => {
                let forwarded = ForwardedDecision {
                    decision: decision.clone(),
                    role: caller.role.name().to_owned(),
                    workstation: attempt.workstation.clone(),
                };
                let cluster = state.cluster.clone().ok_or(Refusal::NotAvailable)?;
                blocking(move || cluster.decide(&owner, &forwarded)).await?
            }
        };
        if !stored {
            return Err(Refusal::UnknownCase.into());
        }
        (state.on_change)();
        // The note is sealed with the case, and shown only where content is read.
        ok(StatusCode::CREATED, decision_view(&decision, None))
    }
    .await;
    attempt.finish(result).await
}

/// Stores `decision` with its case in `store`, its note sealed; `false` when the case is no
/// longer there.
pub(crate) fn store_decision(
    store: &GeoStore,
    decision: &Decision,
    resource: &Resource,
) -> Result<bool, ApiError> {
    store
        .store_decision(decision, resource)
        .map_err(|e| match e {
            // The resource's customer key is gone: the note cannot be sealed.
            vigil_storage::StorageError::Key(_) => Refusal::NotAvailable.into(),
            e => ApiError::storage(e),
        })
}

/// The resource the caller may manage: any for admins, their own for customers; others are
/// answered as unknown.
fn managed_resource(attempt: &mut Attempt, raw: &str) -> Result<Resource, ApiError> {
    let caller = attempt.require(RESOURCE_MANAGERS)?.clone();
    let id = resource_id(raw)?;
    attempt.event.resource_id = Some(id.to_string());
    if caller.role == Role::Customer && !caller.owns(id.as_str()) {
        return Err(Refusal::NotOwner.into());
    }
    attempt
        .state
        .resource(id.as_str())
        .ok_or_else(ApiError::no_resource)
}

fn resource_view(resource: &Resource) -> Value {
    json!({
        "id": resource.id,
        "geography": resource.geography,
        "retention_days": resource.retention_days,
        "customer_managed_key": resource.customer_key.is_some(),
        "capabilities": resource.capabilities(),
    })
}

pub async fn view_resource(mut attempt: Attempt, raw: Lenient<Path<String>>) -> Response {
    let result = raw
        .0
        .and_then(|Path(raw)| managed_resource(&mut attempt, &raw))
        .and_then(|r| ok(StatusCode::OK, resource_view(&r)));
    attempt.finish(result).await
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceChange {
    content_logging: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    retention_days: Option<Option<u32>>,
}

impl ResourceChange {
    fn apply(&self, resource: &mut Resource) {
        if let Some(on) = self.content_logging {
            resource.content_logging = on;
        }
        if let Some(days) = self.retention_days {
            resource.retention_days = days;
        }
    }
}

impl AppState {
    /// The registry with `change` applied to resource `id`, checked against the retention
    /// rules.
    fn registry_with(
        &self,
        change: &ResourceChange,
        id: &str,
    ) -> Result<vigil_core::ResourceRegistry, ApiError> {
        let mut next = self
            .registry
            .read()
            .expect("registry lock poisoned")
            .clone();
        let mut resource = next.get(id).cloned().ok_or_else(ApiError::no_resource)?;
        change.apply(&mut resource);
        next.update(resource)
            .map_err(|e| ApiError::invalid("body", e))?;
        self.retention
            .validate(&next)
            .map_err(|e| ApiError::invalid("retention_days", e))?;
        Ok(next)
    }
}

/// Tells `"retention_days": null` (remove the override) from an absent field.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

pub async fn update_resource(
    mut attempt: Attempt,
    raw: Lenient<Path<String>>,
    body: Body<ResourceChange>,
) -> Response {
    let result = async {
        attempt.require(&[Role::Admin])?;
        let change = body.0?;
        let Path(raw) = raw.0?;
        let mut resource = managed_resource(&mut attempt, &raw)?;
        change.apply(&mut resource);
        let state = attempt.state.clone();
        // Checked now, for a plain refusal; applied again below to the registry as it is then.
        state.registry_with(&change, resource.id.as_str())?;
        attempt.event.detail = Some(format!(
            "content_logging: {}, retention_days: {}",
            resource.content_logging,
            resource
                .retention_days
                .map_or("geography default".into(), |d| d.to_string())
        ));
        attempt.commit(Outcome::Done).await?;
        let id = resource.id.clone();
        let (resource, applied) = tokio::task::spawn_blocking({
            let state = state.clone();
            move || -> Result<(Resource, usize), ApiError> {
                // One change at a time, each applied to the registry as the last one left it.
                let _one_at_a_time = state.registry_change.lock().expect("lock poisoned");
                let next = state.registry_with(&change, id.as_str())?;
                next.save(&state.registry_path)
                    .map_err(ApiError::internal)?;
                *state.registry.write().expect("registry lock poisoned") = next.clone();
                // Content logging off destroys the stored content now.
                let done = state.stores.reconcile(&next).map_err(ApiError::internal)?;
                let resource = next
                    .get(id.as_str())
                    .cloned()
                    .ok_or_else(ApiError::no_resource)?;
                Ok((
                    resource,
                    done.content_forgotten.iter().map(|(_, n)| n).sum(),
                ))
            }
        })
        .await
        .map_err(ApiError::internal)??;
        (state.on_change)();
        let mut view = resource_view(&resource);
        view["content_destroyed_records"] = json!(applied);
        ok(StatusCode::OK, view)
    }
    .await;
    attempt.finish(result).await
}

/// Deletes what this node stores of `resource`: one request (when it is that resource's), or
/// all of its data, keys first. Exports are brought up to date after.
pub(crate) fn delete_here(
    state: &AppState,
    resource: &Resource,
    request: Option<&RequestId>,
) -> Result<DeletionDone, ApiError> {
    let store = state.store_of(resource)?;
    let mut done = DeletionDone {
        node: state.node_name().to_owned(),
        ..DeletionDone::default()
    };
    match request {
        Some(request_id) => {
            // Only a request of this resource: another customer's ID reads as absent.
            let owner = store
                .resource_of(request_id.as_str())
                .map_err(ApiError::internal)?;
            if owner.as_ref() == Some(&resource.id) {
                if let Some(deleted) = store
                    .delete_request(&resource.id, request_id)
                    .map_err(ApiError::storage)?
                {
                    done.deleted = true;
                    done.records = 1;
                    done.reviews = deleted.reviews;
                }
            }
        }
        None => {
            let report = store
                .delete_resource(&resource.id)
                .map_err(ApiError::storage)?;
            done.deleted = true;
            done.data_keys = report.data_keys;
            done.records = report.records;
            done.windows = report.windows;
            done.cases = report.cases;
        }
    }
    if done.deleted {
        (state.on_change)();
    }
    Ok(done)
}

/// Deletes here and on every peer (the owner of the resource's partition, and any node still
/// holding a copy from before a rebalance); this node's audit entry is written first.
async fn delete_everywhere(
    attempt: &mut Attempt,
    resource: &Resource,
    request: Option<RequestId>,
) -> Result<Vec<DeletionDone>, ApiError> {
    let state = attempt.state.clone();
    if state.cluster.is_none() {
        if let Some(request_id) = &request {
            // Refused before the entry is written, when this node alone would answer.
            let store = state.store_of(resource)?;
            let owner = store
                .resource_of(request_id.as_str())
                .map_err(ApiError::internal)?;
            if owner.as_ref() != Some(&resource.id) {
                return Err(Refusal::NotAvailable.into());
            }
        }
    }
    attempt.commit(Outcome::Done).await?;
    let caller = attempt.caller.clone().ok_or(Refusal::Unauthenticated)?;
    let resource = resource.clone();
    blocking(move || {
        let mut done = vec![delete_here(&state, &resource, request.as_ref())?];
        if let Some(cluster) = &state.cluster {
            done.extend(cluster.delete(&ForwardedDeletion {
                resource_id: resource.id.to_string(),
                request_id: request.as_ref().map(ToString::to_string),
                actor: caller.name.clone(),
                role: caller.role.name().to_owned(),
            })?);
        }
        Ok(done)
    })
    .await
}

/// The nodes that deleted something.
fn deleted_on(done: &[DeletionDone]) -> Vec<&str> {
    done.iter()
        .filter(|d| d.deleted)
        .map(|d| d.node.as_str())
        .collect()
}

pub async fn delete_request(
    mut attempt: Attempt,
    raw: Lenient<Path<(String, String)>>,
) -> Response {
    let result = async {
        let Path((raw_resource, raw_request)) = raw.0?;
        let resource = managed_resource(&mut attempt, &raw_resource)?;
        let request_id = request_id(&raw_request)?;
        attempt.event.request_id = Some(request_id.to_string());
        let done = delete_everywhere(&mut attempt, &resource, Some(request_id.clone())).await?;
        let nodes = deleted_on(&done);
        if nodes.is_empty() {
            return Err(Refusal::NotAvailable.into());
        }
        let reviews: usize = done.iter().map(|d| d.reviews).sum();
        ok(
            StatusCode::OK,
            json!({"deleted": true, "request_id": request_id, "resource_id": resource.id,
                "reviews_removed": reviews, "nodes": nodes}),
        )
    }
    .await;
    attempt.finish(result).await
}

pub async fn delete_resource(mut attempt: Attempt, raw: Lenient<Path<String>>) -> Response {
    let result = async {
        let Path(raw) = raw.0?;
        let resource = managed_resource(&mut attempt, &raw)?;
        let done = delete_everywhere(&mut attempt, &resource, None).await?;
        let sum = |count: fn(&DeletionDone) -> usize| done.iter().map(count).sum::<usize>();
        ok(
            StatusCode::OK,
            json!({"deleted": true, "resource_id": resource.id,
                "data_keys_destroyed": sum(|d| d.data_keys), "records": sum(|d| d.records),
                "windows": sum(|d| d.windows), "cases": sum(|d| d.cases),
                "nodes": deleted_on(&done)}),
        )
    }
    .await;
    attempt.finish(result).await
}
