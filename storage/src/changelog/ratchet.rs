//! The day-key ratchet: the keys that seal data keys in the changelog, built so that a data
//! key the purge or a deletion destroys can no longer be derived on any node, even though its
//! sealed copy stays in Kafka until compaction.
//!
//! **Days.** A hash chain gives each day a root: `K(d + 1) = H(K(d))`, and day `d`'s root is
//! `H'(K(d))`. A state holds the chain key of one day and derives every later day from it, and
//! no earlier one. The purge moves the state forward, so a purged day's root is on no disk.
//!
//! **Resources and generations, inside a day.** A day's root is the top of a binary tree whose
//! 2^64 leaves are resources (by a hash of the resource ID); under each leaf, a chain of
//! *generations*. A resource-day's data key is sealed under its current generation's key.
//! When a node destroys that data key (a deletion re-keys the day, a resource's shorter
//! retention or content switch destroys it), the generation is *retired*: the state
//! punctures the tree at that leaf, keeping the sibling of every node on the path from the
//! nearest held subtree down (at most 64 keys) and the next generation's chain key. From then
//! on the retired generation's key cannot be derived from the state, while every other
//! resource's and every later generation's still can. A day that is punctured is held as its
//! tree (and the chain moves past it), so the chain key no longer derives its root.
//!
//! A retirement names only a resource, a day and a generation number: it is public. The node
//! that retires publishes it (the node directory topic), and every node applies it to its own
//! copy of the state; two states of one ratchet merge by applying each other's retirements.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::Aes256Gcm;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigil_core::Day;
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{self, KEY_LEN};

type Key = [u8; KEY_LEN];

/// Bits in a resource's path from a day's root to its leaf.
const DEPTH: u8 = 64;

/// The latest day, after the state's oldest, that a retirement may name: retention is at
/// most a year, so anything later is not a retirement vigil wrote (it would make the state
/// hold a tree for every day up to it).
const MOST_DAYS_AHEAD: u32 = 400;

/// The most generations a retirement may skip, or a key be sealed ahead, at once: each one
/// costs a hash to derive.
const MOST_GENERATIONS_AHEAD: u32 = 1 << 16;

const STEP: &[u8] = b"vigil/ratchet/step/v1";
const DAY_ROOT: &[u8] = b"vigil/ratchet/day-root/v2";
const LEFT: &[u8] = b"vigil/ratchet/tree/0/v2";
const RIGHT: &[u8] = b"vigil/ratchet/tree/1/v2";
const LEAF: &[u8] = b"vigil/ratchet/leaf/v2";
const RESOURCE: &[u8] = b"vigil/ratchet/resource/v2";
const GENERATION: &[u8] = b"vigil/ratchet/generation/v2";
const SEAL: &[u8] = b"vigil/ratchet/seal/v2";

/// A retired generation: the data keys of `resource_id` and `day` sealed under a generation
/// below `below` can no longer be opened. Public: IDs and numbers only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retirement {
    /// The resource.
    pub resource_id: String,
    /// The UTC day (days since the Unix epoch).
    pub day: u32,
    /// The first generation still live.
    pub below: u32,
}

/// One state of a geography's ratchet. It holds key material: it is shown to no one, is
/// stored only sealed under a node's master key, and travels only between nodes over mutual
/// TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct RatchetState {
    id: [u8; 16],
    inner: Inner,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Inner {
    /// The oldest day whose keys can be derived.
    oldest: u32,
    /// Days from `oldest` up to `chain_day` are held as trees; later ones come from the chain.
    chain_day: u32,
    chain_key: Key,
    trees: BTreeMap<u32, DayTree>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.chain_key.zeroize();
    }
}

/// What is left of one day's tree.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DayTree {
    /// Subtrees held, by depth and path prefix (the top `depth` bits of a leaf's path).
    nodes: BTreeMap<(u8, u64), Key>,
    /// Resources with retired generations: the first live generation and its chain key.
    heads: BTreeMap<String, (u32, Key)>,
}

impl Drop for DayTree {
    fn drop(&mut self) {
        self.nodes.values_mut().for_each(Zeroize::zeroize);
        self.heads.values_mut().for_each(|(_, key)| key.zeroize());
    }
}

impl fmt::Debug for RatchetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RatchetState({}, from {}, {} punctured days)",
            hex::encode(self.id),
            self.day(),
            self.inner
                .trees
                .values()
                .filter(|t| !t.heads.is_empty())
                .count()
        )
    }
}

/// A ratchet state as it travels between nodes.
#[derive(Serialize, Deserialize)]
pub struct RatchetWire {
    /// The ratchet's ID (hex).
    pub id: String,
    /// The oldest day it derives a key for (days since the Unix epoch).
    pub day: u32,
    /// The state (hex): key material.
    pub state: String,
}

impl fmt::Debug for RatchetWire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RatchetWire({}, from day {})", self.id, self.day)
    }
}

/// A state received from another node, or read back, that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ratchet state: {0}")]
pub struct RatchetError(String);

impl RatchetState {
    /// A new ratchet, starting at `day`.
    pub fn create(day: Day) -> Self {
        let mut id = [0u8; 16];
        let mut chain_key = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut chain_key);
        let state = Self {
            id,
            inner: Inner {
                oldest: day.number(),
                chain_day: day.number(),
                chain_key,
                trees: BTreeMap::new(),
            },
        };
        chain_key.zeroize();
        state
    }

    /// The ratchet's ID (not secret): which ratchet sealed a key.
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    /// The oldest day this state derives a key for.
    pub fn day(&self) -> Day {
        Day::from_number(self.inner.oldest)
    }

    /// The state moved forward to `day`; the same state when it is there already (a ratchet
    /// never moves back).
    pub fn advanced_to(&self, day: Day) -> Self {
        let mut state = self.clone();
        let day = day.number();
        if day <= state.inner.oldest {
            return state;
        }
        state.inner.oldest = day;
        state.inner.trees.retain(|d, _| *d >= day);
        if state.inner.chain_day < day {
            let key = chain_at(&state.inner.chain_key, day - state.inner.chain_day);
            state.inner.chain_key = *key;
            state.inner.chain_day = day;
        }
        state
    }

    /// The generation a new data key of `resource` and `day` is sealed under (retiring the
    /// live one retires every generation up to it, so it never reaches `u32::MAX`).
    pub fn live_generation(&self, day: Day, resource: &str) -> u32 {
        self.inner
            .trees
            .get(&day.number())
            .and_then(|tree| tree.heads.get(resource))
            .map_or(0, |(first, _)| *first)
    }

    /// The key that seals `resource`'s data key of `day` at `generation` in the changelog;
    /// `None` when it cannot be derived any more (the day is purged or the generation retired).
    pub(crate) fn seal_key(&self, day: Day, resource: &str, generation: u32) -> Option<Aes256Gcm> {
        let day = day.number();
        if day < self.inner.oldest
            || day - self.inner.oldest > MOST_DAYS_AHEAD
            || generation
                > self
                    .live_generation(Day::from_number(day), resource)
                    .saturating_add(MOST_GENERATIONS_AHEAD)
        {
            return None;
        }
        let key = match self.inner.trees.get(&day) {
            Some(tree) => tree.generation_key(resource, generation)?,
            None => {
                DayTree::whole(&self.inner.root_of(day)).generation_key(resource, generation)?
            }
        };
        Some(crypto::cipher(&hash(SEAL, &[key.as_slice()])))
    }

    /// Retires `resource`'s generations of `day` below `below`; false when they were retired
    /// already, the day is purged, or the retirement is out of bounds (a day too far ahead,
    /// too many generations at once: not one vigil wrote).
    pub fn retire(&mut self, retirement: &Retirement) -> bool {
        let day = Day::from_number(retirement.day);
        let first = self.live_generation(day, &retirement.resource_id);
        if retirement.day < self.inner.oldest
            || retirement.day - self.inner.oldest > MOST_DAYS_AHEAD
            || retirement.below > first.saturating_add(MOST_GENERATIONS_AHEAD)
        {
            return false;
        }
        self.inner.materialize(retirement.day);
        let tree = self
            .inner
            .trees
            .get_mut(&retirement.day)
            .expect("materialized");
        tree.retire(&retirement.resource_id, retirement.below)
    }

    /// Every retirement this state holds, for a day it still derives.
    pub fn retirements(&self) -> Vec<Retirement> {
        self.inner
            .trees
            .iter()
            .flat_map(|(day, tree)| {
                tree.heads.iter().map(|(resource, (below, _))| Retirement {
                    resource_id: resource.clone(),
                    day: *day,
                    below: *below,
                })
            })
            .collect()
    }

    /// This state with `other`'s purges and retirements applied as well: what neither can
    /// derive. `None` when `other` is a state of another ratchet.
    pub fn merged(&self, other: &RatchetState) -> Option<Self> {
        if other.id != self.id {
            return None;
        }
        let mut merged = self.advanced_to(other.day());
        for retirement in other.retirements() {
            merged.retire(&retirement);
        }
        Some(merged)
    }

    /// The state as it travels to another node.
    pub fn to_wire(&self) -> RatchetWire {
        RatchetWire {
            id: hex::encode(self.id),
            day: self.inner.oldest,
            state: hex::encode(self.to_bytes().as_slice()),
        }
    }

    /// A state received from another node.
    pub fn from_wire(wire: &RatchetWire) -> Result<Self, RatchetError> {
        let id: [u8; 16] = hex::decode(&wire.id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| RatchetError("id: not 16 bytes of hex".into()))?;
        let bytes = Zeroizing::new(
            hex::decode(&wire.state).map_err(|_| RatchetError("state: not hex".into()))?,
        );
        let state = Self::from_bytes(id, &bytes)?;
        if state.inner.oldest != wire.day {
            return Err(RatchetError("day: not the state's".into()));
        }
        Ok(state)
    }

    /// The state's secret part, encoded (to be sealed where it is kept).
    pub(crate) fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(postcard::to_stdvec(&self.inner).expect("a state encodes"))
    }

    /// A state of ratchet `id` from [`RatchetState::to_bytes`].
    pub(crate) fn from_bytes(id: [u8; 16], bytes: &[u8]) -> Result<Self, RatchetError> {
        let inner: Inner =
            postcard::from_bytes(bytes).map_err(|e| RatchetError(format!("state: {e}")))?;
        let consistent = inner.oldest <= inner.chain_day
            && inner
                .trees
                .keys()
                .all(|d| (inner.oldest..inner.chain_day).contains(d))
            && inner.trees.len() == (inner.chain_day - inner.oldest) as usize;
        if !consistent {
            return Err(RatchetError("state: days out of order".into()));
        }
        Ok(Self { id, inner })
    }

    /// How many keys the state holds (chain and tree nodes): its size grows with retirements
    /// until their days are purged.
    #[cfg(test)]
    fn key_count(&self) -> usize {
        1 + self
            .inner
            .trees
            .values()
            .map(|t| t.nodes.len() + t.heads.len())
            .sum::<usize>()
    }
}

impl Inner {
    /// The root of `day`, from the chain (`day` is at or after `chain_day`).
    fn root_of(&self, day: u32) -> Zeroizing<Key> {
        let chain = chain_at(&self.chain_key, day - self.chain_day);
        hash(DAY_ROOT, &[chain.as_slice()])
    }

    /// Holds every day up to `day` as a tree, and moves the chain past it.
    fn materialize(&mut self, day: u32) {
        while self.chain_day <= day {
            let root = hash(DAY_ROOT, &[self.chain_key.as_slice()]);
            self.trees.insert(self.chain_day, DayTree::whole(&root));
            self.chain_key = *hash(STEP, &[self.chain_key.as_slice()]);
            self.chain_day += 1;
        }
    }
}

impl DayTree {
    /// A tree of which nothing is punctured.
    fn whole(root: &Key) -> Self {
        Self {
            nodes: BTreeMap::from([((0, 0), *root)]),
            heads: BTreeMap::new(),
        }
    }

    /// The held subtree above `path`'s leaf, and its depth.
    fn covering(&self, path: u64) -> Option<(u8, Zeroizing<Key>)> {
        (0..=DEPTH).find_map(|depth| {
            self.nodes
                .get(&(depth, prefix(path, depth)))
                .map(|key| (depth, Zeroizing::new(*key)))
        })
    }

    /// The key of `resource`'s `generation`, if it can still be derived.
    fn generation_key(&self, resource: &str, generation: u32) -> Option<Zeroizing<Key>> {
        let (first, mut key) = match self.heads.get(resource) {
            Some((first, key)) => (*first, Zeroizing::new(*key)),
            None => {
                let path = leaf_path(resource);
                let (depth, mut node) = self.covering(path)?;
                for level in depth..DEPTH {
                    node = child(&node, bit(path, level));
                }
                (0, hash(RESOURCE, &[node.as_slice(), resource.as_bytes()]))
            }
        };
        if generation < first {
            return None;
        }
        for _ in first..generation {
            key = hash(GENERATION, &[key.as_slice()]);
        }
        Some(key)
    }

    /// Retires `resource`'s generations below `below` (see the module docs).
    fn retire(&mut self, resource: &str, below: u32) -> bool {
        let first = self.heads.get(resource).map_or(0, |(first, _)| *first);
        if below <= first {
            return false;
        }
        let Some(head) = self.generation_key(resource, below) else {
            // The leaf is gone (another resource with the same 64-bit path took it out):
            // nothing of it can be derived any more.
            return false;
        };
        if !self.heads.contains_key(resource) {
            self.puncture(leaf_path(resource));
        }
        if let Some((_, mut old)) = self.heads.insert(resource.to_owned(), (below, *head)) {
            old.zeroize();
        }
        true
    }

    /// Removes the leaf at `path`, keeping every other leaf derivable: the subtree above it
    /// is replaced by the siblings of the nodes on the way down.
    fn puncture(&mut self, path: u64) {
        let Some((depth, mut node)) = self.covering(path) else {
            return;
        };
        let mut held = self
            .nodes
            .remove(&(depth, prefix(path, depth)))
            .expect("covering");
        held.zeroize();
        for level in depth..DEPTH {
            let towards = bit(path, level);
            let sibling = child(&node, 1 - towards);
            self.nodes
                .insert((level + 1, prefix(path, level + 1) ^ 1), *sibling);
            node = child(&node, towards);
        }
    }
}

/// The path from a day's root to `resource`'s leaf.
fn leaf_path(resource: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(LEAF)
        .chain_update(resource.as_bytes())
        .finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The top `depth` bits of `path`.
fn prefix(path: u64, depth: u8) -> u64 {
    match depth {
        0 => 0,
        _ => path >> (DEPTH - depth),
    }
}

/// The branch `path` takes below depth `level` (0: left, 1: right).
fn bit(path: u64, level: u8) -> u8 {
    ((path >> (DEPTH - 1 - level)) & 1) as u8
}

fn child(node: &Key, towards: u8) -> Zeroizing<Key> {
    hash(if towards == 0 { LEFT } else { RIGHT }, &[node.as_slice()])
}

/// The chain key `steps` days after `key`.
fn chain_at(key: &Key, steps: u32) -> Zeroizing<Key> {
    let mut key = Zeroizing::new(*key);
    for _ in 0..steps {
        key = hash(STEP, &[key.as_slice()]);
    }
    key
}

/// SHA-256 over a domain and `parts`.
fn hash(domain: &[u8], parts: &[&[u8]]) -> Zeroizing<Key> {
    let mut hash = Sha256::new();
    hash.update(domain);
    for part in parts {
        hash.update(part);
    }
    Zeroizing::new(hash.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(n: u32) -> Day {
        Day::from_number(n)
    }

    fn retire(resource: &str, day: u32, below: u32) -> Retirement {
        Retirement {
            resource_id: resource.into(),
            day,
            below,
        }
    }

    /// Whether `a` and `b` seal the same way: a key sealed by one opens with the other.
    fn same(a: &Aes256Gcm, b: &Aes256Gcm) -> bool {
        crypto::open(b, b"aad", &crypto::seal(a, b"aad", b"data key")).is_ok()
    }

    #[test]
    fn the_ratchet_derives_later_days_and_no_earlier_one() {
        let state = RatchetState::create(day(100));
        let later = state.advanced_to(day(103));
        assert_eq!(later.day(), day(103));
        assert!(later.seal_key(day(102), "r1", 0).is_none());
        let key = |s: &RatchetState, d| s.seal_key(day(d), "r1", 0).unwrap();
        assert!(same(&key(&state, 105), &key(&later, 105)));
        assert!(!same(&key(&later, 105), &key(&later, 104)));
        // Another resource's key of the same day is another key.
        assert!(!same(
            &key(&later, 105),
            &later.seal_key(day(105), "r2", 0).unwrap()
        ));
        // A state never moves back.
        assert_eq!(later.advanced_to(day(90)), later);
    }

    #[test]
    fn a_retired_generation_is_underivable_and_everything_else_is_unchanged() {
        let before = RatchetState::create(day(10));
        let mut after = before.clone();
        assert!(after.retire(&retire("r1", 12, 1)));
        assert!(!after.retire(&retire("r1", 12, 1)), "retired already");
        assert_eq!(after.live_generation(day(12), "r1"), 1);
        assert!(after.seal_key(day(12), "r1", 0).is_none());
        fn key(s: &RatchetState, d: u32, r: &str, g: u32) -> Aes256Gcm {
            s.seal_key(day(d), r, g).unwrap()
        }
        assert!(same(&key(&before, 12, "r1", 1), &key(&after, 12, "r1", 1)));
        assert!(same(&key(&before, 12, "r1", 5), &key(&after, 12, "r1", 5)));
        // Every other resource of that day, and every other day, derive as before: the
        // siblings kept along the punctured path are the right ones.
        for n in 0..200 {
            let other = format!("resource-{n}");
            assert!(same(
                &key(&before, 12, &other, 0),
                &key(&after, 12, &other, 0)
            ));
        }
        for d in [10, 11, 13, 40] {
            assert!(same(&key(&before, d, "r1", 0), &key(&after, d, "r1", 0)));
        }
        // Day 12 is a tree now, and the chain moved past it: the chain key derives day 13 on.
        assert!(after.key_count() <= 1 + 3 + 64 + 1);
        // Retiring further moves the head; nothing of the older generations comes back.
        assert!(after.retire(&retire("r1", 12, 3)));
        assert!(after.seal_key(day(12), "r1", 2).is_none());
        assert!(same(&key(&before, 12, "r1", 3), &key(&after, 12, "r1", 3)));
    }

    #[test]
    fn many_retirements_keep_every_other_leaf() {
        let before = RatchetState::create(day(1));
        let mut after = before.clone();
        for n in 0..300 {
            after.retire(&retire(&format!("gone-{n}"), 1, 1));
        }
        for n in 0..300 {
            assert!(after.seal_key(day(1), &format!("gone-{n}"), 0).is_none());
            let kept = format!("kept-{n}");
            assert!(same(
                &before.seal_key(day(1), &kept, 0).unwrap(),
                &after.seal_key(day(1), &kept, 0).unwrap()
            ));
        }
        // At most 64 keys per retirement, far fewer as paths share their top.
        assert!(after.key_count() < 300 * 64);
    }

    #[test]
    fn states_merge_by_applying_each_others_purges_and_retirements() {
        let origin = RatchetState::create(day(20));
        let mut one = origin.clone();
        one.retire(&retire("r1", 25, 1));
        let mut two = origin.advanced_to(day(22));
        two.retire(&retire("r2", 30, 2));
        let merged = one.merged(&two).unwrap();
        assert_eq!(merged.day(), day(22));
        assert!(merged.seal_key(day(25), "r1", 0).is_none());
        assert!(merged.seal_key(day(30), "r2", 1).is_none());
        assert!(merged.seal_key(day(30), "r2", 2).is_some());
        assert_eq!(merged, two.merged(&one).unwrap());
        assert!(one.merged(&RatchetState::create(day(20))).is_none());
        // Purged days' retirements go with them.
        assert_eq!(merged.advanced_to(day(26)).retirements().len(), 1);
    }

    #[test]
    fn retirements_out_of_bounds_change_nothing() {
        let mut state = RatchetState::create(day(10));
        let before = state.clone();
        assert!(!state.retire(&retire("r1", u32::MAX, 1)));
        assert!(!state.retire(&retire("r1", 10 + MOST_DAYS_AHEAD + 1, 1)));
        assert!(!state.retire(&retire("r1", 12, u32::MAX)));
        assert_eq!(state, before);
        assert!(state.seal_key(day(12), "r1", u32::MAX).is_none());
        assert!(state.retire(&retire("r1", 10 + MOST_DAYS_AHEAD, 1)));
    }

    #[test]
    fn a_state_travels_and_comes_back_the_same() {
        let mut state = RatchetState::create(day(7));
        state.retire(&retire("r1", 9, 1));
        let wire = state.to_wire();
        let back = RatchetState::from_wire(&wire).unwrap();
        assert_eq!(back, state);
        assert!(!format!("{wire:?}").contains(&wire.state));
        assert!(!format!("{state:?}").contains(&wire.state[..16]));
        let mut broken = state.to_wire();
        broken.state.truncate(broken.state.len() - 2);
        assert!(RatchetState::from_wire(&broken).is_err());
        let mut wrong_day = state.to_wire();
        wrong_day.day += 1;
        assert!(RatchetState::from_wire(&wrong_day).is_err());
    }
}
