//! The peer listener's routes: what this node answers the other nodes of its cluster about
//! the cases and records it stores ([`crate::cluster`] is the calling side).
//!
//! The listener requires a certificate from the cluster CA, and the node a request comes from
//! is the certificate's common name. The calling node has already applied the access rules
//! (token, role, workstation, grant, region) and audited the request; this node applies the
//! rules about its data (the case is here, the record is flagged in it, it belongs to the
//! grant's resource, content logging is on) and audits the request again, in its own log,
//! naming the reviewer and the node that forwarded it, before any content leaves or anything
//! changes.

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use vigil_access::{AuditEvent, Outcome, Principal, Refusal};
use vigil_core::{RequestId, Resource};
use vigil_storage::GeoStore;

use crate::attempt::Attempt;
use crate::cluster::{
    CaseList, ForwardedDecision, ForwardedDeletion, ForwardedRead, OnBehalf, ACTOR_HEADER,
    ROLE_HEADER,
};
use crate::error::ApiError;
use crate::handlers::{delete_here, flagged, open_record, store_decision};
use crate::place::blocking;
use crate::tls::Peer;
use crate::AppState;

/// The peer listener's router.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/peer/v1/cases", get(cases))
        .route("/peer/v1/cases/{case_id}", get(case))
        .route("/peer/v1/reads", post(read))
        .route("/peer/v1/decisions", post(decide))
        .route("/peer/v1/deletions", post(delete))
        .route("/peer/v1/ratchets/{geography}", get(ratchet))
        .fallback(|| async { ApiError::no_route() })
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(count_request))
        .with_state(state)
}

/// The operation a peer request's route names, for its metrics (the audit entry names the
/// action itself).
fn operation(path: &str) -> &'static str {
    match path {
        "/peer/v1/cases" => "cases",
        "/peer/v1/cases/{case_id}" => "case",
        "/peer/v1/reads" => "read",
        "/peer/v1/decisions" => "decision",
        "/peer/v1/deletions" => "deletion",
        "/peer/v1/ratchets/{geography}" => "ratchet",
        _ => "other",
    }
}

/// Counts each peer request by operation and status code, and times it.
async fn count_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let operation = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("other", |path| operation(path.as_str()));
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let code = response.status().as_u16().to_string();
    metrics::counter!("vigil_peer_requests_total", "operation" => operation, "code" => code)
        .increment(1);
    metrics::histogram!("vigil_peer_request_duration_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The node on the other end (its certificate's common name), and whom it asks for.
struct FromNode {
    node: String,
    on_behalf: OnBehalf,
}

impl FromRequestParts<Arc<AppState>> for FromNode {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<AppState>) -> Result<Self, ApiError> {
        let node = parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .and_then(|c| c.0.node.clone())
            .ok_or(Refusal::Unauthenticated)?;
        // Only a name a principal could have, or a role's name: nothing else reaches the log.
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| Principal::check_name(v).is_ok())
                .map(str::to_owned)
        };
        let on_behalf = OnBehalf {
            actor: header(ACTOR_HEADER).unwrap_or_else(|| format!("node {node}")),
            role: header(ROLE_HEADER).unwrap_or_default(),
        };
        Ok(Self { node, on_behalf })
    }
}

impl FromNode {
    /// An audited request: the entry names whom the calling node asks for (a reviewer, an
    /// admin) and the node.
    fn attempt(&self, state: &Arc<AppState>, action: &str) -> Attempt {
        let mut event = AuditEvent::new(&self.on_behalf.actor, action);
        event.role = Some(self.on_behalf.role.clone()).filter(|r| !r.is_empty());
        event.detail = Some(format!("forwarded by node {}", self.node));
        Attempt::forwarded(state.clone(), event)
    }
}

/// The store holding `case_id` here and its resource, when the case belongs to
/// `resource_id` and flags `request` (if one is named); `missing` when the case is not here,
/// `not_available` when it does not match.
async fn flagged_here(
    state: &Arc<AppState>,
    case_id: &str,
    resource_id: &str,
    request: Option<&RequestId>,
    missing: Refusal,
) -> Result<(Arc<GeoStore>, Resource), ApiError> {
    let (store, case) = state.case_here(case_id).await?.ok_or(missing)?;
    if case.resource_id.as_str() != resource_id || !flagged(&case, request) {
        return Err(Refusal::NotAvailable.into());
    }
    let resource = state.resource(resource_id).ok_or(Refusal::NotAvailable)?;
    Ok((store, resource))
}

async fn cases(from: FromNode, State(state): State<Arc<AppState>>) -> Response {
    let mut attempt = from.attempt(&state, "peer.cases.list");
    let result = async {
        let here = state.clone();
        let cases = blocking(move || here.local_cases()).await?;
        attempt.add_detail(format!("cases: {}", cases.len()));
        Ok(Json(CaseList {
            node: state.node_name().to_owned(),
            cases,
        }))
    }
    .await;
    attempt.finish(result).await
}

async fn case(
    from: FromNode,
    State(state): State<Arc<AppState>>,
    Path(case_id): Path<String>,
) -> Response {
    let mut attempt = from.attempt(&state, "peer.case.view");
    attempt.event.case_id = Some(case_id.clone());
    let result = async {
        let here = state.clone();
        let found = blocking(move || here.local_case(&case_id))
            .await?
            .ok_or(Refusal::UnknownCase)?;
        attempt.event.resource_id = Some(found.data.case.resource_id.to_string());
        Ok(Json(found.data))
    }
    .await;
    attempt.finish(result).await
}

async fn read(
    from: FromNode,
    State(state): State<Arc<AppState>>,
    Json(read): Json<ForwardedRead>,
) -> Response {
    let mut attempt = from.attempt(&state, "record.read");
    attempt.event.case_id = Some(read.case_id.clone());
    attempt.event.request_id = Some(read.request_id.clone());
    attempt.event.resource_id = Some(read.resource_id.clone());
    attempt.event.access_request = Some(read.access_request.clone());
    attempt.event.workstation = read.workstation.clone();
    let result = async {
        let request_id =
            RequestId::parse(&read.request_id).map_err(|e| ApiError::invalid("request_id", e))?;
        let (store, resource) = flagged_here(
            &state,
            &read.case_id,
            &read.resource_id,
            Some(&request_id),
            Refusal::NotAvailable,
        )
        .await?;
        let record = blocking(move || open_record(&store, &resource, &request_id)).await?;
        attempt.commit(Outcome::Granted).await?;
        let mut response = Json(record).into_response();
        response.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
        Ok(response)
    }
    .await;
    attempt.finish(result).await
}

async fn decide(
    from: FromNode,
    State(state): State<Arc<AppState>>,
    Json(forwarded): Json<ForwardedDecision>,
) -> Response {
    let decision = forwarded.decision;
    let mut attempt = from.attempt(&state, "decision.record");
    attempt.event.case_id = Some(decision.case_id.clone());
    attempt.event.request_id = decision.request_id.as_ref().map(ToString::to_string);
    attempt.event.resource_id = Some(decision.resource_id.to_string());
    attempt.event.access_request = Some(decision.access_request.clone());
    attempt.event.workstation = forwarded.workstation;
    let result = async {
        let (store, resource) = flagged_here(
            &state,
            &decision.case_id,
            decision.resource_id.as_str(),
            decision.request_id.as_ref(),
            Refusal::UnknownCase,
        )
        .await?;
        if !decision.note.is_empty() && !resource.content_logging {
            return Err(Refusal::ContentLoggingOff.into());
        }
        attempt.add_detail(format!(
            "decision: {} ({})",
            decision.outcome.name(),
            decision.decision_id
        ));
        attempt.commit(Outcome::Done).await?;
        if !blocking(move || store_decision(&store, &decision, &resource)).await? {
            return Err(Refusal::UnknownCase.into());
        }
        (state.on_change)();
        Ok(Json(serde_json::json!({"stored": true})))
    }
    .await;
    attempt.finish(result).await
}

async fn delete(
    from: FromNode,
    State(state): State<Arc<AppState>>,
    Json(deletion): Json<ForwardedDeletion>,
) -> Response {
    let action = match deletion.request_id {
        Some(_) => "data.delete_request",
        None => "data.delete_resource",
    };
    let mut attempt = from.attempt(&state, action);
    attempt.event.resource_id = Some(deletion.resource_id.clone());
    attempt.event.request_id = deletion.request_id.clone();
    let result = async {
        let request = deletion
            .request_id
            .as_deref()
            .map(RequestId::parse)
            .transpose()
            .map_err(|e| ApiError::invalid("request_id", e))?;
        let resource = state
            .resource(&deletion.resource_id)
            .ok_or_else(ApiError::no_resource)?;
        attempt.commit(Outcome::Done).await?;
        let here = state.clone();
        let done = blocking(move || delete_here(&here, &resource, request.as_ref())).await?;
        Ok(Json(done))
    }
    .await;
    attempt.finish(result).await
}

/// A geography's day-key ratchet state, for a node that has none (a new node, or one that lost
/// its disk): it seals and opens the data keys in the changelog. Audited; never to anything
/// but another node of the cluster (the listener checked its certificate).
async fn ratchet(
    from: FromNode,
    State(state): State<Arc<AppState>>,
    Path(geography): Path<String>,
) -> Response {
    let mut attempt = from.attempt(&state, "peer.ratchet.read");
    attempt.add_detail(format!("geography {geography}"));
    let result = async {
        let geography = vigil_core::Geography::parse(&geography)
            .map_err(|e| ApiError::invalid("geography", e))?;
        let here = state.clone();
        let ratchet = blocking(move || {
            let state = || {
                if !here.stores.geographies_on_disk()?.contains(&geography) {
                    return Ok(None);
                }
                here.stores.geo(&geography)?.ratchet_state()
            };
            state().map_err(ApiError::internal)
        })
        .await?
        .ok_or(Refusal::NotAvailable)?;
        attempt.commit(Outcome::Done).await?;
        Ok(Json(ratchet.to_wire()))
    }
    .await;
    attempt.finish(result).await
}
