//! Typed errors of the storage layer. The apiserver maps each to one `metav1.Status`
//! (compacted -> 410 Gone, value too large -> 413, bad key -> 400, unavailable -> 503 or 500).

use crate::Revision;

/// Everything the storage layer can refuse or fail with.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The requested revision was removed by compaction (etcd: "mvcc: required revision has
    /// been compacted").
    #[error(
        "required revision {requested} has been compacted (compact revision {compact_revision})"
    )]
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },
    /// The requested revision is newer than the head (etcd: "mvcc: required revision is a
    /// future revision").
    #[error("required revision {requested} is a future revision (current revision {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// Revisions are positive; zero means "head" where it is allowed.
    #[error("invalid revision {0}")]
    InvalidRevision(Revision),
    /// A key must be non-empty, start with '/', hold no NUL byte and be at most
    /// `MAX_KEY_BYTES` long.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// The end of a range must sort after its start.
    #[error("invalid range: end {end:?} does not sort after start {start:?}")]
    InvalidRange { start: String, end: String },
    /// etcd refuses requests over 1.5 MiB ("etcdserver: request is too large").
    #[error("value of {size} bytes exceeds the limit of {limit} bytes")]
    ValueTooLarge { size: usize, limit: usize },
    /// A put named a lease that does not exist (etcd: "etcdserver: requested lease not found").
    #[error("lease {0} not found")]
    LeaseNotFound(i64),
    /// A lease TTL must be positive.
    #[error("invalid lease TTL {0}")]
    InvalidTtl(i64),
    /// The datastore URL could not be understood.
    #[error("invalid datastore endpoint: {0}")]
    InvalidEndpoint(String),
    /// The database could not be reached or failed; the operation may be retried. Whether a
    /// write that failed this way committed is unknown, exactly as with an etcd timeout.
    #[error("datastore unavailable: {0}")]
    Unavailable(String),
    /// The stored data break an invariant (a hole in the revision log, an unknown schema).
    #[error("datastore corrupt: {0}")]
    Corrupt(String),
    /// A value could not be turned into, or back from, its stored form (a missing or wrong
    /// encryption key).
    #[error("{0}")]
    Transform(String),
    /// The backend was shut down.
    #[error("storage backend closed")]
    Closed,
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        StorageError::Unavailable(e.to_string())
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
