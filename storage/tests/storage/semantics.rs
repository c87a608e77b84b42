//! Reads, single-key transactions, revisions, bad input, compaction and leases.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kelp_storage::{
    Compare, EventKind, KeyRange, MAX_VALUE_BYTES, Op, RangeRequest, Revision, StorageError, Txn,
    TxnOutcome,
};
use rand::{Rng, SeedableRng};

use crate::{TestDb, both_backends, collect_until, fold};

both_backends!(
    create_update_delete_follow_etcd,
    ranges_page_and_count_at_a_pinned_revision,
    bad_input_is_refused_and_changes_nothing,
    concurrent_compare_and_swaps_have_one_winner,
    revisions_are_contiguous_under_concurrent_writers,
    reads_at_a_revision_equal_the_log_folded_up_to_it,
    leases_expire_and_delete_their_keys,
    state_survives_reopening,
    the_head_is_every_acknowledged_write,
);

async fn create_update_delete_follow_etcd(db: &mut TestDb) {
    let s = db.open().await;
    let created = s.txn(Txn::create("/r/a", "1")).await.unwrap();
    assert_eq!(
        created,
        TxnOutcome::Succeeded {
            revision: 1,
            prev_kv: None
        }
    );

    // A second create fails and returns the current value, like etcd's Else(Get).
    match s.txn(Txn::create("/r/a", "other")).await.unwrap() {
        TxnOutcome::Failed {
            current: Some(kv),
            revision,
        } => {
            assert_eq!(
                (kv.value.as_slice(), kv.mod_revision, revision),
                (&b"1"[..], 1, 1)
            );
        }
        other => panic!("duplicate create: {other:?}"),
    }
    // A stale compare fails the same way.
    assert!(
        !s.txn(Txn::update("/r/a", 7, "x"))
            .await
            .unwrap()
            .succeeded()
    );

    let updated = s.txn(Txn::update("/r/a", 1, "2")).await.unwrap();
    let TxnOutcome::Succeeded {
        revision: 2,
        prev_kv: Some(prev),
    } = updated
    else {
        panic!("{updated:?}")
    };
    assert_eq!(prev.value, b"1");

    let (kv, head) = s.get("/r/a").await.unwrap();
    let kv = kv.unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version, head),
        (1, 2, 2, 2)
    );

    assert_eq!(
        s.txn(Txn::put("/r/b", "b")).await.unwrap().revision(),
        Some(3)
    );
    assert_eq!(
        s.txn(Txn::delete("/r/a", 2)).await.unwrap().revision(),
        Some(4)
    );
    assert_eq!(s.get("/r/a").await.unwrap(), (None, 4));
    // Deleting what is gone fails with no current value and takes no revision.
    assert_eq!(
        s.txn(Txn {
            key: b"/r/a".to_vec(),
            compare: Compare::Any,
            op: Op::Delete
        })
        .await
        .unwrap(),
        TxnOutcome::Failed {
            current: None,
            revision: 4
        }
    );

    // A new incarnation starts over: its own create revision, version 1.
    assert_eq!(
        s.txn(Txn::create("/r/a", "3")).await.unwrap().revision(),
        Some(5)
    );
    let kv = s.get("/r/a").await.unwrap().0.unwrap();
    assert_eq!((kv.create_revision, kv.version), (5, 1));

    let all = s
        .range(RangeRequest::new(KeyRange::prefix("/r/")))
        .await
        .unwrap();
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"/r/a".to_vec(), b"/r/b".to_vec()]);
    assert_eq!((all.header_revision, all.count, all.more), (5, 2, false));
    assert_eq!(s.revisions().await.unwrap(), (5, 0));
}

async fn ranges_page_and_count_at_a_pinned_revision(db: &mut TestDb) {
    let s = db.open().await;
    for i in 0..25 {
        s.txn(Txn::create(format!("/p/{i:02}"), format!("v{i}")))
            .await
            .unwrap();
    }
    s.txn(Txn::create("/q/outside", "x")).await.unwrap();
    let page = s
        .range(RangeRequest::new(KeyRange::prefix("/p/")).limit(10))
        .await
        .unwrap();
    assert_eq!(
        (page.kvs.len(), page.more, page.count, page.header_revision),
        (10, true, 25, 26)
    );
    let pinned = page.header_revision;

    // Writes after the first page do not show in pages read at its revision.
    s.txn(Txn::create("/p/00a", "new")).await.unwrap();
    s.txn(Txn::delete("/p/15", 16)).await.unwrap();

    let mut seen: Vec<Vec<u8>> = page.kvs.iter().map(|kv| kv.key.clone()).collect();
    let mut next = page.kvs.last().unwrap().key.clone();
    loop {
        next.push(0);
        let r = KeyRange::between(next.clone(), kelp_storage::prefix_end(b"/p/"));
        let page = s
            .range(RangeRequest::new(r).at(pinned).limit(10))
            .await
            .unwrap();
        assert_eq!(page.header_revision, 28, "the header is the head");
        assert_eq!(page.read_revision, pinned);
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        next = page.kvs.last().unwrap().key.clone();
    }
    let expected: Vec<Vec<u8>> = (0..25).map(|i| format!("/p/{i:02}").into_bytes()).collect();
    assert_eq!(seen, expected);

    let mut count = RangeRequest::new(KeyRange::prefix("/p/"));
    count.count_only = true;
    let now = s.range(count.clone()).await.unwrap();
    assert_eq!(
        (now.count, now.kvs.len()),
        (25, 0),
        "one added, one deleted"
    );
    let then = s.range(count.at(pinned)).await.unwrap();
    assert_eq!(then.count, 25);
    let at_head = s
        .range(RangeRequest::new(KeyRange::prefix("/p/")))
        .await
        .unwrap();
    assert!(at_head.kvs.iter().any(|kv| kv.key == b"/p/00a"));
    assert!(!at_head.kvs.iter().any(|kv| kv.key == b"/p/15"));
}

async fn bad_input_is_refused_and_changes_nothing(db: &mut TestDb) {
    let s = db.open().await;
    s.txn(Txn::create("/k", "v")).await.unwrap();
    let before = s
        .range(RangeRequest::new(KeyRange::prefix("/")))
        .await
        .unwrap();

    let too_big = vec![b'x'; MAX_VALUE_BYTES + 1];
    assert!(matches!(
        s.txn(Txn::create("/big", too_big)).await,
        Err(StorageError::ValueTooLarge { size, limit }) if size == MAX_VALUE_BYTES + 1 && limit == MAX_VALUE_BYTES
    ));
    for key in [&b""[..], b"no-slash", b"/nul\0byte"] {
        assert!(
            matches!(
                s.txn(Txn::put(key, "v")).await,
                Err(StorageError::InvalidKey { .. })
            ),
            "{key:?}"
        );
        assert!(
            matches!(s.get(key).await, Err(StorageError::InvalidKey { .. })),
            "{key:?}"
        );
    }
    assert!(matches!(
        s.txn(Txn::update("/k", 0, "v")).await,
        Err(StorageError::InvalidRevision(0))
    ));
    assert!(matches!(
        s.txn(Txn::update("/k", -3, "v")).await,
        Err(StorageError::InvalidRevision(-3))
    ));
    assert!(matches!(
        s.range(RangeRequest::new(KeyRange::prefix("/")).at(99))
            .await,
        Err(StorageError::FutureRevision {
            requested: 99,
            current: 1
        })
    ));
    assert!(matches!(
        s.range(RangeRequest::new(KeyRange::prefix("/")).at(-1))
            .await,
        Err(StorageError::InvalidRevision(-1))
    ));
    assert!(matches!(
        s.range(RangeRequest::new(KeyRange::between("/b", "/a")))
            .await,
        Err(StorageError::InvalidRange { .. })
    ));
    assert!(matches!(
        s.watch(KeyRange::prefix("/"), 50).await,
        Err(StorageError::FutureRevision { .. })
    ));
    assert!(matches!(
        s.txn(Txn::put("/leased", "v").with_lease(12345)).await,
        Err(StorageError::LeaseNotFound(12345))
    ));
    assert!(matches!(
        s.lease_grant(0).await,
        Err(StorageError::InvalidTtl(0))
    ));
    assert!(matches!(
        s.compact(5).await,
        Err(StorageError::FutureRevision { .. })
    ));

    // The largest value accepted is exactly the limit.
    let after = s
        .range(RangeRequest::new(KeyRange::prefix("/")))
        .await
        .unwrap();
    assert_eq!(before, after, "refused input changed the store");
    let max = vec![b'y'; MAX_VALUE_BYTES];
    assert_eq!(
        s.txn(Txn::create("/max", max.clone()))
            .await
            .unwrap()
            .revision(),
        Some(2)
    );
    assert_eq!(s.get("/max").await.unwrap().0.unwrap().value, max);
}

async fn concurrent_compare_and_swaps_have_one_winner(db: &mut TestDb) {
    let s = db.open().await;
    for round in 0..5 {
        // Concurrent creates of one key: exactly one wins.
        let key = format!("/cas/{round}");
        let creates = (0..32).map(|i| {
            let s = s.clone();
            let key = key.clone();
            tokio::spawn(async move { s.txn(Txn::create(key, format!("c{i}"))).await.unwrap() })
        });
        let outcomes = futures::future::join_all(creates).await;
        let winners: Vec<_> = outcomes
            .iter()
            .filter(|o| o.as_ref().unwrap().succeeded())
            .collect();
        assert_eq!(winners.len(), 1, "creates of {key}");
        let rev = winners[0].as_ref().unwrap().revision().unwrap();
        let value = s.get(key.clone()).await.unwrap().0.unwrap().value;

        // Concurrent updates from that revision: exactly one wins, the others see its value.
        let updates = (0..32).map(|i| {
            let s = s.clone();
            let key = key.clone();
            tokio::spawn(async move {
                (
                    i,
                    s.txn(Txn::update(key, rev, format!("u{i}"))).await.unwrap(),
                )
            })
        });
        let outcomes: Vec<_> = futures::future::join_all(updates)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let won: Vec<_> = outcomes.iter().filter(|(_, o)| o.succeeded()).collect();
        assert_eq!(won.len(), 1, "updates of {key}");
        let winner_value = format!("u{}", won[0].0).into_bytes();
        for (_, o) in &outcomes {
            if let TxnOutcome::Failed { current, .. } = o {
                let current = current.as_ref().expect("the key exists");
                assert_eq!(current.value, winner_value);
                assert_ne!(current.value, value);
            }
        }
    }
}

async fn revisions_are_contiguous_under_concurrent_writers(db: &mut TestDb) {
    let s = db.open().await;
    let writers = (0..16).map(|w| {
        let s = s.clone();
        tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..40 {
                let out = s
                    .txn(Txn::put(format!("/c/{w}/{}", i % 7), format!("{i}")))
                    .await
                    .unwrap();
                revs.push(out.revision().unwrap());
            }
            revs
        })
    });
    let mut all: Vec<Revision> = Vec::new();
    for revs in futures::future::join_all(writers).await {
        let revs = revs.unwrap();
        assert!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "one writer's revisions increase"
        );
        all.extend(revs);
    }
    let set: BTreeSet<Revision> = all.iter().copied().collect();
    assert_eq!(set.len(), all.len(), "a revision was given twice");
    assert_eq!(set, (1..=640).collect(), "revisions are not 1..=640");
    assert_eq!(s.revisions().await.unwrap().0, 640);
}

async fn reads_at_a_revision_equal_the_log_folded_up_to_it(db: &mut TestDb) {
    let s = db.open().await;
    let mut log = s.watch(KeyRange::prefix("/"), 1).await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..400 {
        let key = format!("/f/{}", rng.random_range(0..20));
        let (cur, _) = s.get(key.clone()).await.unwrap();
        let txn = match (cur, rng.random_range(0..10)) {
            (Some(kv), 0..=2) => Txn::delete(key, kv.mod_revision),
            (Some(kv), _) => Txn::update(key, kv.mod_revision, format!("{}", rng.random::<u32>())),
            (None, _) => Txn::create(key, format!("{}", rng.random::<u32>())),
        };
        assert!(s.txn(txn).await.unwrap().succeeded());
    }
    let head = s.revisions().await.unwrap().0;
    assert_eq!(head, 400);
    let events = collect_until(&mut log, head).await;
    crate::assert_contiguous(&events, 1, head);

    let check = |at: Revision| {
        let s = s.clone();
        let expected = fold(&events, at);
        async move {
            let got = s
                .range(RangeRequest::new(KeyRange::prefix("/f/")).at(at))
                .await
                .unwrap();
            let got: std::collections::BTreeMap<_, _> = got
                .kvs
                .into_iter()
                .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
                .collect();
            assert_eq!(got, expected, "state at revision {at}");
            for (key, (value, rev)) in &expected {
                let r = s
                    .range(RangeRequest::new(KeyRange::key(key.clone())).at(at))
                    .await
                    .unwrap();
                assert_eq!((&r.kvs[0].value, r.kvs[0].mod_revision), (value, *rev));
            }
        }
    };
    for at in [1, 2, 57, 150, 199, 200, 201, 333, 399, 400] {
        check(at).await;
    }

    s.compact(200).await.unwrap();
    assert_eq!(s.revisions().await.unwrap(), (400, 200));
    for at in [200, 201, 333, 400] {
        check(at).await;
    }
    for at in [1, 150, 199] {
        assert!(
            matches!(
                s.range(RangeRequest::new(KeyRange::prefix("/f/")).at(at))
                    .await,
                Err(StorageError::Compacted {
                    compact_revision: 200,
                    ..
                })
            ),
            "read at {at} after compacting at 200"
        );
    }
    assert!(matches!(
        s.watch(KeyRange::prefix("/"), 199).await,
        Err(StorageError::Compacted { .. })
    ));
    assert!(matches!(
        s.compact(150).await,
        Err(StorageError::Compacted { .. })
    ));

    // A watch from the compact revision still replays everything from there, previous values
    // included, exactly as before compaction.
    let mut w = s.watch(KeyRange::prefix("/f/"), 200).await.unwrap();
    let replayed = collect_until(&mut w, head).await;
    let original: Vec<_> = events
        .iter()
        .filter(|e| e.revision() >= 200)
        .cloned()
        .collect();
    assert_eq!(replayed, original);

    // Compacting everything still keeps the head readable.
    s.compact(400).await.unwrap();
    check(400).await;
}

async fn leases_expire_and_delete_their_keys(db: &mut TestDb) {
    let s = db.open().await;
    let short = s.lease_grant(1).await.unwrap();
    let long = s.lease_grant(3600).await.unwrap();
    assert_eq!(s.lease_keep_alive(long).await.unwrap(), 3600);
    assert!(s.lease_time_to_live(long).await.unwrap() > 3590);
    assert!(matches!(
        s.lease_keep_alive(42).await,
        Err(StorageError::LeaseNotFound(42))
    ));

    let mut w = s.watch(KeyRange::prefix("/events/"), 0).await.unwrap();
    s.txn(Txn::create("/events/a", "a").with_lease(short))
        .await
        .unwrap();
    s.txn(Txn::create("/events/b", "b").with_lease(long))
        .await
        .unwrap();
    s.txn(Txn::create("/events/c", "c")).await.unwrap();
    assert_eq!(s.get("/events/a").await.unwrap().0.unwrap().lease, short);

    // The short lease expires within about a second: its key is deleted, visibly to watchers.
    let events = collect_until(&mut w, 4).await;
    assert_eq!(events.len(), 4);
    assert_eq!(
        (events[3].kind, events[3].kv.key.as_slice()),
        (EventKind::Delete, &b"/events/a"[..])
    );
    assert!(matches!(
        s.lease_time_to_live(short).await,
        Err(StorageError::LeaseNotFound(_))
    ));

    s.lease_revoke(long).await.unwrap();
    assert_eq!(s.get("/events/b").await.unwrap().0, None);
    assert!(
        s.get("/events/c").await.unwrap().0.is_some(),
        "a key without lease stays"
    );
    assert!(matches!(
        s.lease_revoke(long).await,
        Err(StorageError::LeaseNotFound(_))
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.revisions().await.unwrap().0, 5);
}

async fn state_survives_reopening(db: &mut TestDb) {
    let s = db.open().await;
    for i in 0..10 {
        s.txn(Txn::create(format!("/keep/{i}"), "v")).await.unwrap();
    }
    s.close().await;
    drop(s);
    let s = Arc::new(db.open().await);
    assert_eq!(s.revisions().await.unwrap().0, 10);
    assert_eq!(
        s.range(RangeRequest::new(KeyRange::prefix("/keep/")))
            .await
            .unwrap()
            .count,
        10
    );
    assert_eq!(
        s.txn(Txn::create("/keep/next", "v"))
            .await
            .unwrap()
            .revision(),
        Some(11)
    );
}

both_backends!(compaction_runs_on_a_timer_and_keeps_recent_revisions);

async fn compaction_runs_on_a_timer_and_keeps_recent_revisions(db: &mut TestDb) {
    let options = kelp_storage::Options {
        compact_interval: Some(Duration::from_millis(200)),
        compact_min_retain: 50,
        compact_batch: 7,
        ..crate::test_options()
    };
    let s = crate::open_with(db, options).await;
    for i in 0..300 {
        s.txn(Txn::put(format!("/t/{}", i % 10), format!("{i}")))
            .await
            .unwrap();
    }
    // The first tick only records the head; a later one compacts to it, minus the retained
    // revisions, in batches of 7: wait for the compact revision to reach 300 - 50 and stay
    // there (the head no longer moves).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let compacted = loop {
        let (head, compact) = s.revisions().await.unwrap();
        assert!(
            compact <= head - 50,
            "compacted to {compact} with head {head}"
        );
        if compact == 250 {
            break compact;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "compaction stopped at {compact}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.revisions().await.unwrap(),
        (300, 250),
        "compaction went past the retained revisions"
    );
    assert!(matches!(
        s.range(RangeRequest::new(KeyRange::prefix("/t/")).at(compacted - 1))
            .await,
        Err(StorageError::Compacted { .. })
    ));
    let at = s
        .range(RangeRequest::new(KeyRange::prefix("/t/")).at(compacted))
        .await
        .unwrap();
    assert_eq!(at.kvs.len(), 10);
}

both_backends!(a_transformer_sees_every_value_on_its_way_in_and_out);

/// Reverses the bytes of values under `/secret/`: the database holds them reversed, every
/// read, transaction outcome and watch event gives them back as written.
#[derive(Debug)]
struct Reverse;

impl kelp_storage::Transformer for Reverse {
    fn write_stored(&self, key: &[u8], mut value: Vec<u8>) -> kelp_storage::Result<Vec<u8>> {
        if key.starts_with(b"/secret/") {
            value.reverse();
            value.insert(0, b'!');
        }
        Ok(value)
    }
    fn read_stored(&self, key: &[u8], mut value: Vec<u8>) -> kelp_storage::Result<Vec<u8>> {
        if !key.starts_with(b"/secret/") {
            return Ok(value);
        }
        if value.first() != Some(&b'!') {
            return Err(kelp_storage::StorageError::Transform(
                "not transformed".into(),
            ));
        }
        value.remove(0);
        value.reverse();
        Ok(value)
    }
    fn covers(&self, key: &[u8]) -> bool {
        key.starts_with(b"/secret/")
    }
}

async fn a_transformer_sees_every_value_on_its_way_in_and_out(db: &mut TestDb) {
    // Two backends on one database at once: on SQLite, neither holds the file's lock.
    let shared = kelp_storage::Options {
        exclusive: false,
        ..crate::test_options()
    };
    let plain = crate::open_with(db, shared.clone()).await;
    let options = kelp_storage::Options {
        transformer: Some(Arc::new(Reverse)),
        ..shared
    };
    let s = crate::open_with(db, options).await;
    let mut w = s.watch(KeyRange::prefix("/"), 0).await.unwrap();
    assert!(
        s.txn(Txn::create("/secret/a", "abc"))
            .await
            .unwrap()
            .succeeded()
    );
    assert!(
        s.txn(Txn::create("/open/b", "xyz"))
            .await
            .unwrap()
            .succeeded()
    );
    let (kv, _) = s.get("/secret/a").await.unwrap();
    let kv = kv.unwrap();
    assert_eq!(kv.value, b"abc");
    // Another handle without the transformer sees what is stored.
    assert_eq!(
        plain.get("/secret/a").await.unwrap().0.unwrap().value,
        b"!cba"
    );
    assert_eq!(plain.get("/open/b").await.unwrap().0.unwrap().value, b"xyz");
    let listed = s
        .range(RangeRequest::new(KeyRange::prefix("/")))
        .await
        .unwrap();
    let values: Vec<&[u8]> = listed.kvs.iter().map(|kv| kv.value.as_slice()).collect();
    assert_eq!(values, [b"xyz".as_slice(), b"abc".as_slice()]);
    match s
        .txn(Txn::update("/secret/a", kv.mod_revision, "def"))
        .await
        .unwrap()
    {
        TxnOutcome::Succeeded { prev_kv, .. } => assert_eq!(prev_kv.unwrap().value, b"abc"),
        other => panic!("{other:?}"),
    }
    match s.txn(Txn::create("/secret/a", "again")).await.unwrap() {
        TxnOutcome::Failed { current, .. } => assert_eq!(current.unwrap().value, b"def"),
        other => panic!("{other:?}"),
    }
    let head = s.revisions().await.unwrap().0;
    let events = collect_until(&mut w, head).await;
    let values: Vec<&[u8]> = events.iter().map(|e| e.kv.value.as_slice()).collect();
    assert_eq!(values, [b"abc".as_slice(), b"xyz", b"def"]);
    assert_eq!(events[2].prev_kv.as_ref().unwrap().value, b"abc");
    assert!(s.transforms(b"/secret/a") && !s.transforms(b"/open/b"));
    // A value the transformer cannot read back is an error, not garbage.
    assert!(
        plain
            .txn(Txn::create("/secret/raw", "raw"))
            .await
            .unwrap()
            .succeeded()
    );
    assert!(matches!(
        s.get("/secret/raw").await,
        Err(kelp_storage::StorageError::Transform(_))
    ));
}

async fn the_head_is_every_acknowledged_write(db: &mut TestDb) {
    let s = db.open().await;
    assert_eq!(s.head().await.unwrap(), 0);
    let writes = (0..50).map(|i| {
        let s = s.clone();
        async move {
            let rev = s
                .txn(Txn::create(format!("/head/{i}"), "v"))
                .await
                .unwrap()
                .revision()
                .unwrap();
            // Whatever else commits meanwhile, the head covers this acknowledged write.
            assert!(s.head().await.unwrap() >= rev);
            rev
        }
    });
    let revs = futures::future::join_all(writes).await;
    let head = s.head().await.unwrap();
    assert_eq!(head, *revs.iter().max().unwrap());
    assert_eq!(head, s.revisions().await.unwrap().0);
    // A failed compare commits nothing and leaves the head.
    assert!(
        !s.txn(Txn::create("/head/0", "again"))
            .await
            .unwrap()
            .succeeded()
    );
    assert_eq!(s.head().await.unwrap(), head);
}

/// An SQLite file is one backend's at a time: a second open fails with a clear error while
/// the first holds it, and succeeds once it is closed.
#[tokio::test]
async fn an_sqlite_file_has_one_exclusive_backend() {
    let db = TestDb::sqlite();
    let first = db.open().await;
    first.txn(Txn::create("/one", "v")).await.unwrap();
    let started = std::time::Instant::now();
    let e = kelp_storage::Backend::open(&db.endpoint(), crate::test_options())
        .await
        .err()
        .expect("a second exclusive open must fail");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "it waits for a closing holder first"
    );
    assert!(
        matches!(&e, StorageError::Unavailable(m) if m.contains("in use by another process")),
        "{e}"
    );
    first.close().await;
    let second = db.open().await;
    assert_eq!(second.head().await.unwrap(), 1);
}
