//! The route table: every operation the API serves, once. The router and `/openapi.json` are
//! both made from it, so the document lists exactly what is served.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::Method;
use axum::routing::{get, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::{handlers, AppState};

/// One operation.
pub struct Operation {
    /// The HTTP method.
    pub method: Method,
    /// The path, with `{name}` parameters.
    pub path: &'static str,
    /// The action name the audit log records (also the OpenAPI operationId).
    pub action: &'static str,
    /// Who may call it, and what it does.
    pub summary: &'static str,
    /// The request body's schema, if it takes one.
    pub body: Option<fn() -> Value>,
    /// The success status.
    pub success: u16,
}

macro_rules! op {
    ($method:ident $path:literal, $action:literal, $success:literal, $body:expr, $summary:literal) => {
        Operation {
            method: Method::$method,
            path: $path,
            action: $action,
            summary: $summary,
            body: $body,
            success: $success,
        }
    };
}

fn reason_body() -> Value {
    json!({"type": "object", "required": ["reason"], "additionalProperties": false,
        "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 1000}}})
}
fn approve_body() -> Value {
    json!({"type": "object", "additionalProperties": false,
        "properties": {"duration_secs": {"type": "integer", "minimum": 1,
            "description": "grant length; default access.grant_secs, at most access.max_grant_secs"}}})
}
fn note_body() -> Value {
    json!({"type": "object", "additionalProperties": false,
        "properties": {"note": {"type": "string", "maxLength": 1000}}})
}
fn sign_in_body() -> Value {
    json!({"type": "object", "required": ["code"], "additionalProperties": false,
        "properties": {"code": {"type": "string", "description": "a one-time sign-in code"}}})
}
fn decision_body() -> Value {
    json!({"type": "object", "required": ["decision"], "additionalProperties": false,
        "properties": {
            "request_id": {"type": ["string", "null"], "description": "the flagged record decided on; absent or null for the whole case"},
            "decision": {"type": "string", "enum": ["abuse_confirmed", "false_positive", "needs_escalation"]},
            "note": {"type": "string", "maxLength": 2000}}})
}
fn resource_body() -> Value {
    json!({"type": "object", "additionalProperties": false,
        "properties": {"content_logging": {"type": "boolean"},
            "retention_days": {"type": ["integer", "null"], "minimum": 1,
                "description": "null removes the resource's own retention"}}})
}

/// Every operation, in the order the document lists them.
pub static OPERATIONS: &[Operation] = &[
    op!(GET "/v1/me", "me", 200, None, "Any principal: who the token belongs to, its role and region, when the token expires, and the workstation the request came from."),
    op!(POST "/v1/sign-in", "session.sign_in", 201, Some(sign_in_body), "Anyone holding a one-time sign-in code (`{\"code\": \"vgs_...\"}`, as `vigil demo` links carry): a token for the code's principal (`token`, shown once, and `expires_at`); the code works once."),
    op!(POST "/v1/tokens", "token.reissue", 201, None, "Any principal: a fresh token (`token`, shown once, and `expires_at`, `access.token_ttl_secs` from now) in place of the one presented, which stops working at once."),
    op!(GET "/v1/cases", "cases.list", 200, None, "Reviewers and managers: every open case's metadata (IDs, scores, categories, signals, sampled request IDs, human decisions without their notes); never content. With `[cluster]`, every node's cases: `node` names the node storing each, and `unreachable_nodes` the peers that did not answer (their cases are then missing)."),
    op!(GET "/v1/cases/{case_id}", "case.view", 200, None, "Reviewers and managers: one case's metadata, its LLM verdicts (without rationale), its human decisions and the caller's grant standing. A decision's note is shown only over the workstation listener to a holder of an active grant for the case (region rule and content logging as for content), and showing one is audited as a content read (`granted`); elsewhere `note` is null and `note_status` is `withheld` (as it is for a case stored on another node). `node` names the node storing the case; with `[cluster]`, a case not stored here is fetched from the peer that stores it."),
    op!(POST "/v1/cases/{case_id}/access-requests", "grant.request", 201, Some(reason_body), "Reviewers and managers: ask for just-in-time access to one case's flagged records, with a reason. Refused for EEA data to non-EEA reviewers and for resources with content logging off."),
    op!(GET "/v1/access-requests", "grants.list", 200, None, "Reviewers see their own access requests, managers everyone's; `?state=pending|active|expired|denied|revoked` filters."),
    op!(GET "/v1/access-requests/{request_id}", "grant.view", 200, None, "The requester or a manager: one access request and where it stands."),
    op!(POST "/v1/access-requests/{request_id}/approve", "grant.approve", 200, Some(approve_body), "Managers other than the requester: approve; the grant runs from now for the configured time (or less)."),
    op!(POST "/v1/access-requests/{request_id}/deny", "grant.deny", 200, Some(note_body), "Managers other than the requester: deny."),
    op!(POST "/v1/access-requests/{request_id}/revoke", "grant.revoke", 200, None, "A manager, or the grant's holder: end an active grant now."),
    op!(POST "/v1/cases/{case_id}/decisions", "decision.record", 201, Some(decision_body), "Reviewers and managers holding an active grant for the case: record a decision about one flagged record (`request_id`) or the whole case: abuse_confirmed, false_positive or needs_escalation, with a note (refused for a resource with content logging off). Stored with the case, the note encrypted under the resource's data key like the content it describes, and removed with that content (purge, deletion, content logging turned off); audited without the note; listed without notes, which are shown only as `case.view` says (never in this response)."),
    op!(GET "/v1/cases/{case_id}/records/{request_id}", "record.read", 200, None, "Point query, workstation listener only: one flagged record's prompt and completion, under the caller's active grant for that case. Anything else is refused without saying whether the record exists. With `[cluster]`, a record stored on another node is read from it over mutual TLS after this node checked the grant; both nodes audit the read."),
    op!(GET "/v1/resources/{resource_id}", "resource.view", 200, None, "Admins, or the customer owning it: the resource and its capabilities (`ContentLogging` `false` exactly when content logging is off)."),
    op!(PATCH "/v1/resources/{resource_id}", "resource.update", 200, Some(resource_body), "Admins: turn content logging on or off (off destroys the stored content at once) and set retention."),
    op!(DELETE "/v1/resources/{resource_id}/requests/{request_id}", "data.delete_request", 200, None, "Admins, or the customer owning the resource: delete one stored request now. With `[cluster]`, on every node (`nodes` lists those that held it); each audits it."),
    op!(DELETE "/v1/resources/{resource_id}/data", "data.delete_resource", 200, None, "Admins, or the customer owning the resource: delete all of its stored data now (its keys first). With `[cluster]`, on every node; each audits it."),
];

/// The action of the operation at `method` and `path` (the route's pattern).
pub fn action_of(method: &Method, path: &str) -> Option<&'static str> {
    // axum answers HEAD with the GET handler.
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    OPERATIONS
        .iter()
        .find(|op| op.method == *method && op.path == path)
        .map(|op| op.action)
}

fn with_handler(route: MethodRouter<Arc<AppState>>, op: &Operation) -> MethodRouter<Arc<AppState>> {
    let filter = MethodFilter::try_from(op.method.clone()).expect("a standard method");
    match op.action {
        "me" => route.on(filter, handlers::me),
        "token.reissue" => route.on(filter, handlers::reissue_token),
        "session.sign_in" => route.on(filter, handlers::sign_in),
        "cases.list" => route.on(filter, handlers::list_cases),
        "case.view" => route.on(filter, handlers::view_case),
        "grant.request" => route.on(filter, handlers::request_access),
        "grants.list" => route.on(filter, handlers::list_requests),
        "grant.view" => route.on(filter, handlers::view_request),
        "grant.approve" => route.on(filter, handlers::approve),
        "grant.deny" => route.on(filter, handlers::deny),
        "grant.revoke" => route.on(filter, handlers::revoke),
        "record.read" => route.on(filter, handlers::read_record),
        "decision.record" => route.on(filter, handlers::record_decision),
        "resource.view" => route.on(filter, handlers::view_resource),
        "resource.update" => route.on(filter, handlers::update_resource),
        "data.delete_request" => route.on(filter, handlers::delete_request),
        "data.delete_resource" => route.on(filter, handlers::delete_resource),
        other => unreachable!("operation {other} has no handler"),
    }
}

/// The router: every operation, `/openapi.json`, and JSON 404s for anything else.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let mut router = Router::new();
    let mut paths: Vec<&str> = OPERATIONS.iter().map(|op| op.path).collect();
    paths.sort_unstable();
    paths.dedup();
    for path in paths {
        let route = OPERATIONS
            .iter()
            .filter(|op| op.path == path)
            .fold(MethodRouter::new(), with_handler);
        router = router.route(path, route);
    }
    let document = openapi();
    router
        .route("/openapi.json", get(move || async move { Json(document) }))
        .fallback(|| async { ApiError::no_route() })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(count_request))
        .with_state(state)
}

/// Counts each request by operation (its action, `openapi`, or `other` for a path not
/// served) and status code, and times it: labels from the route table, never from the path.
async fn count_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let operation = match request.extensions().get::<MatchedPath>() {
        Some(path) if path.as_str() == "/openapi.json" => "openapi",
        Some(path) => action_of(request.method(), path.as_str()).unwrap_or("other"),
        None => "other",
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let code = response.status().as_u16().to_string();
    metrics::counter!("vigil_api_requests_total", "operation" => operation, "code" => code)
        .increment(1);
    metrics::histogram!("vigil_api_request_duration_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The OpenAPI 3.1 document of [`OPERATIONS`].
pub fn openapi() -> Value {
    let error = json!({"description": "refused or invalid; `error.code` says why",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut paths = Map::new();
    for op in OPERATIONS {
        let parameters: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        // Content is answered on the workstation listener only (a point query elsewhere is
        // refused); everything else on both.
        let listener = match op.action {
            "record.read" => "workstation",
            _ => "both",
        };
        let mut operation = json!({
            "operationId": op.action,
            "summary": op.summary,
            "x-vigil-listener": listener,
            "security": [{"bearer": []}],
            "parameters": parameters,
            "responses": {
                op.success.to_string(): {"description": "success", "content": {"application/json": {}}},
                "4XX": error,
                "503": {"description": "the audit log cannot record the request, so it was not carried out"},
            },
        });
        if let Some(body) = op.body {
            operation["requestBody"] =
                json!({"required": false, "content": {"application/json": {"schema": body()}}});
        }
        let entry = paths
            .entry(op.path)
            .or_insert_with(|| Value::Object(Map::new()));
        entry[op.method.as_str().to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "vigil API", "version": env!("CARGO_PKG_VERSION"),
            "description": "JIT-gated point queries (workstation listener, mutual TLS), case metadata, access requests, resource management. Every /v1 request is audited."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}},
        },
    })
}
