//! Where a case is: in this node's stores, or on a peer node that owns its resource's
//! partition ([`crate::cluster`]). Handlers look cases up through here, so that a case view,
//! a grant request, a point query or a decision works the same from any node.

use std::sync::Arc;

use vigil_core::{Case, Day};
use vigil_storage::GeoStore;

use crate::cluster::{CaseData, OnBehalf, PeerNode};
use crate::error::ApiError;
use crate::AppState;

/// Where a case is stored.
pub(crate) enum Place {
    /// In this node's store of its geography.
    Here(Arc<GeoStore>),
    /// On another node.
    Peer(PeerNode),
}

/// A case, and where it is.
pub(crate) struct Found {
    /// The case and what its view is made from.
    pub data: CaseData,
    /// Where it is stored.
    pub place: Place,
}

/// The case with what its view is made from, read from `store` on `node`.
/// Whether `case` is of a resource whose partition this node is still rebuilding: it is
/// served by the node it comes from until the rebuild is done.
fn arriving(store: &GeoStore, case: &Case) -> bool {
    store.moving(case.resource_id.as_str()) == Some(vigil_storage::changelog::Moving::Arriving)
}

fn case_data(node: &str, store: &GeoStore, day: Day, case: Case) -> Result<CaseData, ApiError> {
    let id = Some(case.case_id.as_str());
    Ok(CaseData {
        node: node.to_owned(),
        day: day.number(),
        verdicts: store.verdicts(id).map_err(ApiError::internal)?,
        decisions: store.decisions(id).map_err(ApiError::internal)?,
        case,
    })
}

impl AppState {
    /// The case stored on this node, and its store and day: one lookup per store, nothing
    /// else read.
    fn stored_case(&self, case_id: &str) -> Result<Option<(Arc<GeoStore>, Day, Case)>, ApiError> {
        for store in self.stores.on_disk().map_err(ApiError::internal)? {
            if let Some((day, case)) = store
                .dated_case_by_id(case_id)
                .map_err(ApiError::internal)?
            {
                if !arriving(&store, &case) {
                    return Ok(Some((store, day, case)));
                }
            }
        }
        Ok(None)
    }

    /// The case stored on this node, with its store and what its view is made from.
    pub(crate) fn local_case(&self, case_id: &str) -> Result<Option<Found>, ApiError> {
        let Some((store, day, case)) = self.stored_case(case_id)? else {
            return Ok(None);
        };
        let data = case_data(self.node_name(), &store, day, case)?;
        Ok(Some(Found {
            data,
            place: Place::Here(store),
        }))
    }

    /// The case if it is stored on this node, with its store (for a point query or a
    /// decision: its verdicts and decisions are not read).
    pub(crate) async fn case_here(
        self: &Arc<Self>,
        case_id: &str,
    ) -> Result<Option<(Arc<GeoStore>, Case)>, ApiError> {
        let state = self.clone();
        let case_id = case_id.to_owned();
        blocking(move || {
            Ok(state
                .stored_case(&case_id)?
                .map(|(store, _, case)| (store, case)))
        })
        .await
    }

    /// Every case stored on this node.
    pub(crate) fn local_cases(&self) -> Result<Vec<CaseData>, ApiError> {
        let mut cases = Vec::new();
        for store in self.stores.on_disk().map_err(ApiError::internal)? {
            for (day, case) in store.dated_cases().map_err(ApiError::internal)? {
                if !arriving(&store, &case) {
                    cases.push(case_data(self.node_name(), &store, day, case)?);
                }
            }
        }
        Ok(cases)
    }

    /// The case, here or on the peer that holds it.
    pub(crate) async fn locate_case(
        self: &Arc<Self>,
        case_id: &str,
        on_behalf: &OnBehalf,
    ) -> Result<Option<Found>, ApiError> {
        let state = self.clone();
        let case_id = case_id.to_owned();
        let on_behalf = on_behalf.clone();
        blocking(move || {
            if let Some(found) = state.local_case(&case_id)? {
                return Ok(Some(found));
            }
            let Some(cluster) = &state.cluster else {
                return Ok(None);
            };
            Ok(cluster
                .find_case(&case_id, &on_behalf)?
                .map(|(peer, data)| Found {
                    data,
                    place: Place::Peer(peer),
                }))
        })
        .await
    }

    /// Every case on every node, newest first (a case on two nodes, left by a rebalance,
    /// once: this node's copy), and the nodes that did not answer.
    pub(crate) async fn cases_everywhere(
        self: &Arc<Self>,
        on_behalf: &OnBehalf,
    ) -> Result<(Vec<CaseData>, Vec<String>), ApiError> {
        let state = self.clone();
        let on_behalf = on_behalf.clone();
        blocking(move || {
            let mut cases = state.local_cases()?;
            let mut missing = Vec::new();
            if let Some(cluster) = &state.cluster {
                let (theirs, unanswered) = cluster.cases(&on_behalf);
                let mut seen: std::collections::HashSet<String> =
                    cases.iter().map(|c| c.case.case_id.clone()).collect();
                cases.extend(
                    theirs
                        .into_iter()
                        .filter(|c| seen.insert(c.case.case_id.clone())),
                );
                missing = unanswered;
            }
            cases.sort_by_key(|c| std::cmp::Reverse(c.case.opened_at));
            Ok((cases, missing))
        })
        .await
    }
}

/// Runs `work` (store reads, calls to peers) off the API's async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
}
