//! Refusals of anonymous requests (no token, or one that matches no one) are what a flood
//! from the network produces, and an entry each would let anyone grow the audit log, and its
//! fsyncs, without bound. So per window, the first refusal of each kind (peer address, action,
//! reason, the workstation it named) is written in full, with the IDs it named; the repeats are
//! counted, and at the end of the window one entry per kind records how many there were
//! ([`record_repeats`]).
//!
//! The tally is bounded too: past [`MAX_KINDS`] kinds in one window, refusals of new kinds are
//! counted together under [`OTHER_PEERS`] (the first of them written in full, the rest only
//! counted), so a client with many addresses can make later peers' refusals anonymous within
//! a window, but never uncounted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use vigil_access::AuditEvent;

use crate::AppState;

/// Kinds of anonymous refusal tallied in one window at most.
pub const MAX_KINDS: usize = 4096;

/// What the repeats of peers past [`MAX_KINDS`] are recorded as coming from.
pub const OTHER_PEERS: &str = "other addresses";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    /// `None` for the peers past the limit.
    peer: Option<IpAddr>,
    action: String,
    reason: String,
    workstation: Option<String>,
}

/// The current window's anonymous refusals: kind → repeats after the first.
#[derive(Debug, Default)]
pub struct Repeats {
    tally: Mutex<HashMap<Kind, u64>>,
}

impl Repeats {
    /// Notes a refusal of an anonymous request from `peer`; true when it is the first of its
    /// kind in this window (write it), false when it was counted instead.
    pub fn first(&self, peer: IpAddr, event: &AuditEvent) -> bool {
        let mut kind = Kind {
            peer: Some(peer),
            action: event.action.clone(),
            reason: event.reason.clone().unwrap_or_default(),
            workstation: event.workstation.clone(),
        };
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        if tally.len() >= MAX_KINDS && !tally.contains_key(&kind) {
            kind.peer = None;
            kind.workstation = None;
        }
        match tally.get_mut(&kind) {
            Some(repeats) => {
                *repeats += 1;
                false
            }
            None => {
                tally.insert(kind, 0);
                true
            }
        }
    }

    /// Ends the window: one entry for each kind that repeated, saying how often.
    fn drain(&self, window: Duration) -> Vec<AuditEvent> {
        let tally = std::mem::take(&mut *self.tally.lock().unwrap_or_else(|e| e.into_inner()));
        tally
            .into_iter()
            .filter(|(_, repeats)| *repeats > 0)
            .map(|(kind, repeats)| {
                let mut event = AuditEvent::new("anonymous", kind.action).refused(&kind.reason);
                event.peer = Some(
                    kind.peer
                        .map_or_else(|| OTHER_PEERS.into(), |p| p.to_string()),
                );
                event.detail = Some(format!(
                    "repeated {repeats} more times within {} ms",
                    window.as_millis()
                ));
                event
            })
            .collect()
    }
}

/// Every `window`, and once more when `stopped` says to stop (after the listeners have
/// drained), writes the entries of the repeats counted since the last time.
pub async fn record_repeats(
    state: Arc<AppState>,
    window: Duration,
    mut stopped: watch::Receiver<()>,
) {
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(window) => false,
            _ = stopped.changed() => true,
        };
        for event in state.anonymous.drain(window) {
            if let Err(e) = state.audit.append(event).await {
                tracing::error!(error = %e, "The count of repeated anonymous refusals could not be audited.");
            }
        }
        if stopping {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(action: &str) -> AuditEvent {
        AuditEvent::new("anonymous", action).refused("unauthenticated")
    }

    #[test]
    fn the_first_of_a_kind_is_written_and_the_repeats_counted() {
        let repeats = Repeats::default();
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        assert!(repeats.first(a, &refusal("cases.list")));
        assert!(repeats.first(b, &refusal("cases.list")));
        assert!(repeats.first(a, &refusal("record.read")));
        for _ in 0..5 {
            assert!(!repeats.first(a, &refusal("cases.list")));
        }
        let entries = repeats.drain(Duration::from_secs(10));
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].peer.as_deref(), Some("127.0.0.1"));
        assert_eq!(entries[0].action, "cases.list");
        assert_eq!(entries[0].reason.as_deref(), Some("unauthenticated"));
        assert!(entries[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("repeated 5 more"));
        // A new window starts afresh.
        assert!(repeats.first(a, &refusal("cases.list")));
    }

    #[test]
    fn the_tally_is_bounded() {
        let repeats = Repeats::default();
        for i in 0..(MAX_KINDS as u32 + 100) {
            let peer = IpAddr::from(std::net::Ipv4Addr::from(0x7f00_0000 + i));
            repeats.first(peer, &refusal("cases.list"));
        }
        assert!(repeats.tally.lock().unwrap().len() <= MAX_KINDS + 1);
        let entries = repeats.drain(Duration::from_secs(1));
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].peer.as_deref(), Some(OTHER_PEERS));
        assert!(entries[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("repeated 99 more"));
    }
}
