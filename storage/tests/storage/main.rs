//! Storage behaviour, proven on both backends: SQLite in a temp dir and a throwaway
//! PostgreSQL cluster per test.

mod linearizability;
mod processes;
mod semantics;
mod watching;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use kelp_storage::{Backend, Endpoint, Event, EventKind, Options, Revision, WatchStream};
use kelp_testkit::PgCluster;

pub enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres(PgCluster),
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        TestDb::Sqlite(
            tempfile::Builder::new()
                .prefix("kelp-sqlite-")
                .tempdir()
                .expect("tempdir"),
        )
    }
    pub fn postgres() -> TestDb {
        TestDb::Postgres(PgCluster::start())
    }
    pub fn url(&self) -> String {
        match self {
            TestDb::Sqlite(dir) => format!("sqlite://{}", dir.path().join("state.db").display()),
            TestDb::Postgres(pg) => pg.url(),
        }
    }
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::parse(&self.url()).expect("endpoint")
    }
    pub fn pg(&mut self) -> Option<&mut PgCluster> {
        match self {
            TestDb::Postgres(pg) => Some(pg),
            TestDb::Sqlite(_) => None,
        }
    }
    pub fn pg_port(&self) -> u16 {
        match self {
            TestDb::Postgres(pg) => pg.port(),
            TestDb::Sqlite(_) => panic!("not PostgreSQL"),
        }
    }
    pub async fn open(&self) -> Backend {
        open_with(self, test_options()).await
    }
}

/// Options for tests: no timer-driven compaction (tests compact on demand), quick polls.
pub fn test_options() -> Options {
    Options {
        connect_timeout: Some(Duration::from_secs(20)),
        compact_interval: None,
        lease_check_interval: Duration::from_millis(100),
        ..Options::default()
    }
}

pub async fn open_with(db: &TestDb, options: Options) -> Backend {
    Backend::open(&db.endpoint(), options)
        .await
        .expect("open backend")
}

/// Generates `sqlite` and `postgres` tests running `async fn name(db: &mut TestDb)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let mut db = $crate::TestDb::sqlite();
                super::$name(&mut db).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let mut db = $crate::TestDb::postgres();
                super::$name(&mut db).await
            }
        }
    )*};
}

/// Reads events from a watch until one at or beyond `until` arrived.
pub async fn collect_until(w: &mut WatchStream, until: Revision) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    while out.last().is_none_or(|e| e.revision() < until) {
        match tokio::time::timeout(Duration::from_secs(20), w.next()).await {
            Ok(Some(Ok(batch))) => out.extend(batch),
            Ok(Some(Err(e))) => panic!("watch failed after {} events: {e}", out.len()),
            Ok(None) => panic!("watch ended after {} events", out.len()),
            Err(_) => panic!(
                "watch stalled after {} events (last {:?}, waiting for {until})",
                out.len(),
                out.last().map(Event::revision)
            ),
        }
    }
    out
}

/// The state the events imply: key -> (value, mod revision), folding events up to `at`.
pub fn fold(events: &[Event], at: Revision) -> BTreeMap<Vec<u8>, (Vec<u8>, Revision)> {
    let mut state = BTreeMap::new();
    for e in events.iter().take_while(|e| e.revision() <= at) {
        match e.kind {
            EventKind::Put => {
                state.insert(e.kv.key.clone(), (e.kv.value.clone(), e.revision()));
            }
            EventKind::Delete => {
                state.remove(&e.kv.key);
            }
        }
    }
    state
}

/// Events must be exactly the revisions `from..=to`, once each, in order.
pub fn assert_contiguous(events: &[Event], from: Revision, to: Revision) {
    let revs: Vec<Revision> = events.iter().map(Event::revision).collect();
    let expected: Vec<Revision> = (from..=to).collect();
    if revs != expected {
        let first_bad = revs
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(revs.len().min(expected.len()));
        panic!(
            "events are not exactly {from}..={to} once each: {} events, first difference at index {first_bad}: got {:?}",
            revs.len(),
            revs.get(first_bad.saturating_sub(2)..(first_bad + 3).min(revs.len()))
        );
    }
}
