//! The data model, as in etcd's `mvccpb` and `etcdserverpb`: key-values with their
//! revisions, single-key transactions guarded by a compare, ranges and watch events.

use crate::error::{Result, StorageError};

/// A global, gapless, monotonically increasing revision. Every successful write gets the next
/// one; the first write of a new store gets 1.
pub type Revision = i64;

/// Largest value accepted, as etcd's default `--max-request-bytes` (1.5 MiB).
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;
/// Largest key accepted. Kubernetes keys are a few hundred bytes at most.
pub const MAX_KEY_BYTES: usize = 4096;

/// One key's state at some revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Revision of the write that created this incarnation of the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after create), as etcd counts it.
    pub version: i64,
    /// Lease the key is attached to, 0 for none.
    pub lease: i64,
}

/// What a transaction checks before it writes, like the `Compare` of an etcd `Txn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// No check (an unconditional put or delete).
    Any,
    /// The key must not exist (etcd: `ModRevision(key) = 0`): a create.
    Absent,
    /// The key must exist with exactly this mod revision: an optimistic update or delete.
    ModRevision(Revision),
}

/// The write a transaction performs when its compare holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { value: Vec<u8>, lease: i64 },
    Delete,
}

/// A single-key transaction: `If(compare) Then(op) Else(Get)`, the shape every write of
/// kube-apiserver takes (create, GuaranteedUpdate, delete).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    pub key: Vec<u8>,
    pub compare: Compare,
    pub op: Op,
}

impl Txn {
    pub fn create(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Txn {
            key: key.into(),
            compare: Compare::Absent,
            op: Op::Put {
                value: value.into(),
                lease: 0,
            },
        }
    }
    pub fn update(key: impl Into<Vec<u8>>, expected: Revision, value: impl Into<Vec<u8>>) -> Self {
        Txn {
            key: key.into(),
            compare: Compare::ModRevision(expected),
            op: Op::Put {
                value: value.into(),
                lease: 0,
            },
        }
    }
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Txn {
            key: key.into(),
            compare: Compare::Any,
            op: Op::Put {
                value: value.into(),
                lease: 0,
            },
        }
    }
    pub fn delete(key: impl Into<Vec<u8>>, expected: Revision) -> Self {
        Txn {
            key: key.into(),
            compare: Compare::ModRevision(expected),
            op: Op::Delete,
        }
    }
    /// Attaches the put to a lease (see [`crate::Backend::lease_grant`]).
    pub fn with_lease(mut self, id: i64) -> Self {
        if let Op::Put { lease, .. } = &mut self.op {
            *lease = id;
        }
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_key(&self.key)?;
        if let Op::Put { value, .. } = &self.op
            && value.len() > MAX_VALUE_BYTES
        {
            return Err(StorageError::ValueTooLarge {
                size: value.len(),
                limit: MAX_VALUE_BYTES,
            });
        }
        if let Compare::ModRevision(r) = self.compare
            && r <= 0
        {
            return Err(StorageError::InvalidRevision(r));
        }
        Ok(())
    }
}

/// The outcome of a [`Txn`]. A failed compare is not an error: like etcd's `Else(Get)` branch
/// it returns the key's current state so the caller can retry or report a conflict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    Succeeded {
        /// The revision of this write.
        revision: Revision,
        /// The key's state before the write, if it existed.
        prev_kv: Option<KeyValue>,
    },
    Failed {
        /// The key's current state (None: it does not exist).
        current: Option<KeyValue>,
        /// Head revision when the compare was evaluated.
        revision: Revision,
    },
}

impl TxnOutcome {
    pub fn succeeded(&self) -> bool {
        matches!(self, TxnOutcome::Succeeded { .. })
    }
    /// The revision of a successful write.
    pub fn revision(&self) -> Option<Revision> {
        match self {
            TxnOutcome::Succeeded { revision, .. } => Some(*revision),
            TxnOutcome::Failed { .. } => None,
        }
    }
}

/// A half-open key range `[start, end)`, or a single key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    /// None: the single key `start`.
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: key.into(),
            end: None,
        }
    }
    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let start = prefix.into();
        let end = prefix_end(&start);
        KeyRange {
            start,
            end: Some(end),
        }
    }
    pub fn between(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: start.into(),
            end: Some(end.into()),
        }
    }
    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.start.as_slice(),
            Some(end) => key >= self.start.as_slice() && key < end.as_slice(),
        }
    }
    /// The end bound used in SQL: single keys become `[key, key\0)`.
    pub(crate) fn sql_end(&self) -> Vec<u8> {
        match &self.end {
            Some(end) => end.clone(),
            None => {
                let mut e = self.start.clone();
                e.push(0);
                e
            }
        }
    }
    pub(crate) fn validate(&self) -> Result<()> {
        // A range may start just after a key (`key\0`): kube-apiserver continues lists so.
        let start = self.start.strip_suffix(&[0u8][..]).unwrap_or(&self.start);
        validate_key(start)?;
        if let Some(end) = &self.end
            && end.as_slice() <= self.start.as_slice()
        {
            return Err(StorageError::InvalidRange {
                start: String::from_utf8_lossy(&self.start).into_owned(),
                end: String::from_utf8_lossy(end).into_owned(),
            });
        }
        Ok(())
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: no upper bound fits in a key; use the largest possible one.
    vec![0xff; MAX_KEY_BYTES + 1]
}

/// A read of a key or range, at the head (`revision` 0) or at a past revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeRequest {
    pub range: KeyRange,
    /// 0: the head; otherwise a revision between the compact revision and the head.
    pub revision: Revision,
    /// 0: no limit.
    pub limit: i64,
    /// Only count the keys, return none.
    pub count_only: bool,
}

impl RangeRequest {
    pub fn new(range: KeyRange) -> Self {
        RangeRequest {
            range,
            revision: 0,
            limit: 0,
            count_only: false,
        }
    }
    pub fn at(mut self, revision: Revision) -> Self {
        self.revision = revision;
        self
    }
    pub fn limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    /// The head revision when the read was served (etcd's header revision), whatever
    /// revision was read at.
    pub header_revision: Revision,
    /// The revision the read observed: the head or the requested revision.
    pub read_revision: Revision,
    pub kvs: Vec<KeyValue>,
    /// More keys follow the last one returned.
    pub more: bool,
    /// Number of keys in the whole range at the read revision.
    pub count: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One committed write, as a watch delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For a put, the new state; for a delete, the key with `mod_revision` set to the
    /// delete's revision and an empty value.
    pub kv: KeyValue,
    /// The key's state before this write (None for a create).
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

pub(crate) fn validate_key(key: &[u8]) -> Result<()> {
    let reason = if key.is_empty() {
        "empty"
    } else if key[0] != b'/' {
        "must start with '/'"
    } else if key.len() > MAX_KEY_BYTES {
        "too long"
    } else if key.contains(&0) {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    let mut shown = String::from_utf8_lossy(key).into_owned();
    shown.truncate(128);
    Err(StorageError::InvalidKey { key: shown, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte_and_drops_trailing_ff() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(b"/a\xff"), b"/b".to_vec());
    }

    #[test]
    fn malformed_keys_are_refused() {
        for key in [&b""[..], b"registry/x", b"/a\0b"] {
            assert!(
                matches!(validate_key(key), Err(StorageError::InvalidKey { .. })),
                "{key:?}"
            );
        }
        assert!(validate_key(&vec![b'/'; MAX_KEY_BYTES + 1]).is_err());
        assert!(validate_key(b"/registry/pods/default/web-0").is_ok());
    }

    #[test]
    fn range_contains_is_half_open() {
        let r = KeyRange::prefix("/registry/pods/");
        assert!(r.contains(b"/registry/pods/a"));
        assert!(!r.contains(b"/registry/pods0"));
        assert!(KeyRange::key("/a").contains(b"/a"));
        assert!(!KeyRange::key("/a").contains(b"/ab"));
    }
}
