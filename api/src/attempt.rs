//! One API request as the audit log sees it: who (token), from where (workstation
//! certificate), what (the route's action), and how it ended.
//!
//! Every `/v1` handler takes an [`Attempt`] and ends with [`Attempt::finish`], so each
//! request leaves exactly one entry. Handlers that read content or change state call
//! [`Attempt::commit`] *before* returning the content or making the change: when the entry
//! cannot be written, nothing is returned or changed (fail closed).

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use vigil_access::{AuditEvent, Outcome, Principal, Refusal, Role};

use crate::error::ApiError;
use crate::tls::Peer;
use crate::{routes, AppState};

/// A request in progress, with its audit entry.
pub struct Attempt {
    /// The handlers' state.
    pub state: Arc<AppState>,
    /// The caller, when the token matched someone and has not expired.
    pub caller: Option<Principal>,
    /// When the caller's token expires.
    pub token_expires_at: Option<time::OffsetDateTime>,
    /// The token presented, for re-issue (never logged or audited).
    pub presented_token: Option<String>,
    /// The registered, unrevoked workstation the request came from, by name.
    pub workstation: Option<String>,
    /// The entry being filled in.
    pub event: AuditEvent,
    /// Where the request came from.
    peer: Option<std::net::IpAddr>,
    committed: bool,
}

impl FromRequestParts<Arc<AppState>> for Attempt {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let path = parts
            .extensions
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let action = routes::action_of(&parts.method, &path).unwrap_or("unknown");
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let (caller, token_expires_at) = match token {
            Some(token) => state
                .access
                .authenticate(token, state.now())
                .map_err(ApiError::internal)?
                .unzip(),
            None => (None, None),
        };
        let peer = parts.extensions.get::<ConnectInfo<Peer>>().map(|c| &c.0);
        // The workstation acting, and the one the entry names: a revoked or unknown
        // certificate acts as none, but the entry still says which it was.
        let (workstation, named) = match peer.and_then(|p| p.certificate.as_deref()) {
            Some(fingerprint) => match state
                .access
                .workstation(fingerprint)
                .map_err(ApiError::internal)?
            {
                Some(w) if w.revoked_at.is_none() => (Some(w.name.clone()), Some(w.name)),
                Some(w) => (None, Some(format!("{} (revoked)", w.name))),
                None => (
                    None,
                    Some(format!(
                        "unregistered certificate {}",
                        &fingerprint[..fingerprint.len().min(16)]
                    )),
                ),
            },
            None => (None, None),
        };
        let peer = peer.map(|p| p.addr.ip());
        let mut event = AuditEvent::new(
            caller.as_ref().map_or("anonymous", |p| p.name.as_str()),
            action,
        );
        event.role = caller.as_ref().map(|p| p.role.name().to_owned());
        event.workstation = named;
        Ok(Self {
            state: state.clone(),
            caller,
            token_expires_at,
            presented_token: token.map(str::to_owned),
            workstation,
            event,
            peer,
            committed: false,
        })
    }
}

impl Attempt {
    /// A request another node forwarded ([`crate::peer`]): no token here, the entry made by
    /// the handler from what the calling node vouches for.
    pub fn forwarded(state: Arc<AppState>, event: AuditEvent) -> Self {
        Self {
            state,
            caller: None,
            token_expires_at: None,
            presented_token: None,
            workstation: None,
            event,
            peer: None,
            committed: false,
        }
    }

    /// Who a request forwarded to another node is made for: the caller, as this node knows
    /// them.
    pub fn on_behalf(&self) -> crate::cluster::OnBehalf {
        crate::cluster::OnBehalf {
            actor: self.event.actor.clone(),
            role: self.event.role.clone().unwrap_or_default(),
        }
    }

    /// The caller, if their role is one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<&Principal, ApiError> {
        let caller = self.caller.as_ref().ok_or(Refusal::Unauthenticated)?;
        if roles.contains(&caller.role) {
            Ok(caller)
        } else {
            Err(Refusal::WrongRole.into())
        }
    }

    /// Refuses unless the request came from a registered workstation.
    pub fn require_workstation(&self) -> Result<(), ApiError> {
        match self.workstation {
            Some(_) => Ok(()),
            None => Err(Refusal::NoWorkstation.into()),
        }
    }

    /// Adds `text` to the entry's detail (after what is there, separated by `; `).
    pub fn add_detail(&mut self, text: String) {
        self.event.detail = Some(match self.event.detail.take() {
            Some(before) => format!("{before}; {text}"),
            None => text,
        });
    }

    /// Writes the entry now, as `outcome`, before the handler returns content or changes
    /// anything. If it cannot be written, the request is refused.
    pub async fn commit(&mut self, outcome: Outcome) -> Result<(), ApiError> {
        self.event.outcome = Some(outcome);
        self.committed = true;
        match self.state.audit.append(self.event.clone()).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, action = %self.event.action, "Refused a request that could not be audited.");
                Err(Refusal::AuditUnavailable.into())
            }
        }
    }

    /// Ends the request: writes its entry if no commit did (refused, or a plain read), and
    /// answers.
    pub async fn finish<T: IntoResponse>(mut self, result: Result<T, ApiError>) -> Response {
        match result {
            Ok(answer) if self.committed => answer.into_response(),
            Ok(answer) => match self.commit(Outcome::Done).await {
                Ok(()) => answer.into_response(),
                Err(e) => e.into_response(),
            },
            Err(error) if error.code == Refusal::AuditUnavailable.code() => error.into_response(),
            Err(error) => {
                // After a commit this is a second entry: the action was recorded, then failed.
                let mut event = self.event.clone().refused(error.code);
                if self.caller.is_none() {
                    event.peer = self.peer.map(|p| p.to_string());
                    let first = self
                        .peer
                        .is_none_or(|peer| self.state.anonymous.first(peer, &event));
                    if !first {
                        return error.into_response();
                    }
                }
                match self.state.audit.append(event).await {
                    Ok(_) => error.into_response(),
                    // Refused, and not recorded: the caller is told the audit log failed.
                    Err(e) => {
                        tracing::error!(error = %e, failures = self.state.audit.failures(), "A refusal could not be audited.");
                        ApiError::from(Refusal::AuditUnavailable).into_response()
                    }
                }
            }
        }
    }
}

/// A path or query extractor whose failure (say, a parameter that is not UTF-8 once
/// percent-decoded) surfaces inside the handler as an invalid-input refusal, so the attempt
/// is still audited.
pub struct Lenient<E>(pub Result<E, ApiError>);

impl<E: FromRequestParts<Arc<AppState>> + Send> FromRequestParts<Arc<AppState>> for Lenient<E> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(E::from_request_parts(parts, state).await.map_err(
            |_| {
                ApiError::invalid(
                    "path or query",
                    "a parameter is not valid UTF-8 or not of the expected shape",
                )
            },
        )))
    }
}

/// A JSON request body. An empty body is the type's default; a non-empty one must be
/// `application/json`. Problems surface inside the handler, so the attempt is still audited.
pub struct Body<T>(pub Result<T, ApiError>);

impl<T: DeserializeOwned + Default + Send> FromRequest<Arc<AppState>> for Body<T> {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(rejection) => {
                return Ok(Self(Err(ApiError::body(
                    rejection.status(),
                    rejection.body_text(),
                ))))
            }
        };
        if bytes.is_empty() {
            return Ok(Self(Ok(T::default())));
        }
        if !is_json {
            return Ok(Self(Err(ApiError::body(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON (Content-Type: application/json)",
            ))));
        }
        Ok(Self(serde_json::from_slice(&bytes).map_err(|e| {
            // serde's messages may quote the value sent; only field names are repeated.
            let text = e.to_string();
            let problem = if text.starts_with("unknown field") || text.starts_with("missing field")
            {
                text
            } else {
                format!(
                    "the body is not the expected JSON ({:?} at line {}, column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                )
            };
            ApiError::body(axum::http::StatusCode::UNPROCESSABLE_ENTITY, problem)
        })))
    }
}
