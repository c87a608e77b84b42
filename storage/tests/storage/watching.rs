//! Watches: exactly once, in order, from any revision, through lag, resumption and compaction.

use std::time::Duration;

use futures::StreamExt;
use kelp_storage::{EventKind, KeyRange, RangeRequest, StorageError, Txn};

use crate::{TestDb, assert_contiguous, both_backends, collect_until, fold};

both_backends!(
    every_watch_delivers_each_matching_write_once_in_order,
    a_watch_from_a_lists_revision_plus_one_misses_nothing,
    a_slow_watcher_catches_up_from_the_log,
    a_resumed_watch_continues_without_loss_or_repeat,
    events_carry_previous_values,
    a_watcher_whose_position_is_compacted_gets_an_error,
    progress_covers_writes_outside_the_range,
);

async fn write_concurrently(
    s: &kelp_storage::Backend,
    writers: usize,
    each: usize,
    prefixes: &[&str],
) {
    let tasks = (0..writers).map(|w| {
        let s = s.clone();
        let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
        tokio::spawn(async move {
            for i in 0..each {
                let key = format!("{}{w}-{}", prefixes[i % prefixes.len()], i % 5);
                let (cur, _) = s.get(key.clone()).await.unwrap();
                let txn = match cur {
                    Some(kv) if i % 3 == 0 => Txn::delete(key, kv.mod_revision),
                    Some(kv) => Txn::update(key, kv.mod_revision, format!("{i}")),
                    None => Txn::create(key, format!("{i}")),
                };
                assert!(s.txn(txn).await.unwrap().succeeded());
            }
        })
    });
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
}

async fn every_watch_delivers_each_matching_write_once_in_order(db: &mut TestDb) {
    let s = db.open().await;
    let mut all = s.watch(KeyRange::prefix("/w/"), 0).await.unwrap();
    let mut only_a = s.watch(KeyRange::prefix("/w/a/"), 0).await.unwrap();
    let mut one_key = s.watch(KeyRange::key("/w/b/3-1"), 0).await.unwrap();
    write_concurrently(&s, 8, 60, &["/w/a/", "/w/b/", "/x/"]).await;
    let head = s.revisions().await.unwrap().0;
    assert_eq!(head, 480);

    let mut everything = s.watch(KeyRange::prefix("/"), 1).await.unwrap();
    let log = collect_until(&mut everything, head).await;
    assert_contiguous(&log, 1, head);

    let last_matching = |prefix: &[u8]| {
        log.iter()
            .rev()
            .find(|e| e.kv.key.starts_with(prefix))
            .unwrap()
            .revision()
    };
    let got = collect_until(&mut all, last_matching(b"/w/")).await;
    let want: Vec<_> = log
        .iter()
        .filter(|e| e.kv.key.starts_with(b"/w/"))
        .cloned()
        .collect();
    assert_eq!(got, want);
    let got = collect_until(&mut only_a, last_matching(b"/w/a/")).await;
    let want: Vec<_> = log
        .iter()
        .filter(|e| e.kv.key.starts_with(b"/w/a/"))
        .cloned()
        .collect();
    assert_eq!(got, want);
    let got = collect_until(&mut one_key, last_matching(b"/w/b/3-1")).await;
    let want: Vec<_> = log
        .iter()
        .filter(|e| e.kv.key == b"/w/b/3-1")
        .cloned()
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);

    // Nothing more arrives.
    s.txn(Txn::put("/zz", "end")).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), all.next())
            .await
            .is_err()
    );
}

async fn a_watch_from_a_lists_revision_plus_one_misses_nothing(db: &mut TestDb) {
    let s = db.open().await;
    let writer = {
        let s = s.clone();
        tokio::spawn(async move { write_concurrently(&s, 4, 100, &["/l/"]).await })
    };
    let mut checks = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let list = s
            .range(RangeRequest::new(KeyRange::prefix("/l/")))
            .await
            .unwrap();
        let w = s
            .watch(KeyRange::prefix("/l/"), list.header_revision + 1)
            .await
            .unwrap();
        checks.push((list, w));
    }
    writer.await.unwrap();
    let head = s.revisions().await.unwrap().0;
    let mut reference = s.watch(KeyRange::prefix("/l/"), 1).await.unwrap();
    let log = collect_until(&mut reference, head).await;
    let expected_final = fold(&log, head);
    for (list, mut w) in checks {
        let events = if list.header_revision < head {
            collect_until(&mut w, head).await
        } else {
            vec![]
        };
        let want: Vec<_> = log
            .iter()
            .filter(|e| e.revision() > list.header_revision)
            .cloned()
            .collect();
        assert_eq!(events, want, "watch from {} + 1", list.header_revision);
        // The list plus the watch give the final state.
        let mut state: std::collections::BTreeMap<_, _> = list
            .kvs
            .into_iter()
            .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
            .collect();
        for e in events {
            match e.kind {
                EventKind::Put => {
                    state.insert(e.kv.key.clone(), (e.kv.value.clone(), e.revision()))
                }
                EventKind::Delete => state.remove(&e.kv.key),
            };
        }
        assert_eq!(state, expected_final);
    }
}

async fn a_slow_watcher_catches_up_from_the_log(db: &mut TestDb) {
    let s = db.open().await;
    let mut slow = s.watch(KeyRange::prefix("/s/"), 0).await.unwrap();
    // One write at a time, each its own batch: far more batches than the hub buffers.
    for i in 0..3000 {
        s.txn(Txn::put(format!("/s/{}", i % 50), format!("{i}")))
            .await
            .unwrap();
    }
    let events = collect_until(&mut slow, 3000).await;
    assert_contiguous(&events, 1, 3000);
}

async fn a_resumed_watch_continues_without_loss_or_repeat(db: &mut TestDb) {
    let s = db.open().await;
    let mut w = s.watch(KeyRange::prefix("/r/"), 0).await.unwrap();
    for i in 0..100 {
        s.txn(Txn::put(format!("/r/{}", i % 10), format!("{i}")))
            .await
            .unwrap();
    }
    let first = collect_until(&mut w, 40).await;
    let last_seen = first.last().unwrap().revision();
    drop(w);
    for i in 100..150 {
        s.txn(Txn::put(format!("/r/{}", i % 10), format!("{i}")))
            .await
            .unwrap();
    }
    let mut resumed = s
        .watch(KeyRange::prefix("/r/"), last_seen + 1)
        .await
        .unwrap();
    let rest = collect_until(&mut resumed, 150).await;
    let mut all = first;
    all.extend(rest);
    assert_contiguous(&all, 1, 150);
}

async fn events_carry_previous_values(db: &mut TestDb) {
    let s = db.open().await;
    let mut w = s.watch(KeyRange::prefix("/e/"), 0).await.unwrap();
    s.txn(Txn::create("/e/k", "one")).await.unwrap();
    s.txn(Txn::update("/e/k", 1, "two")).await.unwrap();
    s.txn(Txn::delete("/e/k", 2)).await.unwrap();
    s.txn(Txn::create("/e/k", "three")).await.unwrap();
    let live = collect_until(&mut w, 4).await;
    // Replayed from the log, the same events with the same previous values.
    let replayed = collect_until(&mut s.watch(KeyRange::prefix("/e/"), 1).await.unwrap(), 4).await;
    assert_eq!(live, replayed);
    let kinds: Vec<_> = live.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Put,
            EventKind::Put,
            EventKind::Delete,
            EventKind::Put
        ]
    );
    let prev: Vec<_> = live
        .iter()
        .map(|e| {
            e.prev_kv
                .as_ref()
                .map(|p| (p.value.clone(), p.mod_revision))
        })
        .collect();
    assert_eq!(
        prev,
        [
            None,
            Some((b"one".to_vec(), 1)),
            Some((b"two".to_vec(), 2)),
            None
        ]
    );
    assert_eq!((live[2].kv.mod_revision, live[2].kv.value.len()), (3, 0));
    assert_eq!((live[3].kv.create_revision, live[3].kv.version), (4, 1));
}

async fn a_watcher_whose_position_is_compacted_gets_an_error(db: &mut TestDb) {
    let s = db.open().await;
    let mut stuck = s.watch(KeyRange::prefix("/c/"), 0).await.unwrap();
    for i in 0..3000 {
        s.txn(Txn::put(format!("/c/{}", i % 10), format!("{i}")))
            .await
            .unwrap();
    }
    s.compact(3000).await.unwrap();
    let mut delivered = Vec::new();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(20), stuck.next())
            .await
            .expect("watch stalled")
        {
            Some(Ok(batch)) => delivered.extend(batch),
            Some(Err(e)) => break e,
            None => panic!("watch ended without an error"),
        }
    };
    assert!(matches!(err, StorageError::Compacted { .. }), "{err}");
    assert!(
        delivered.len() < 3000,
        "it could not have delivered everything"
    );
    assert_contiguous(&delivered, 1, delivered.len() as i64);
}

/// Progress moves past writes the watch does not match, and what it covers is on the stream.
async fn progress_covers_writes_outside_the_range(db: &mut TestDb) {
    let s = db.open().await;
    let mut w = s.watch(KeyRange::prefix("/p/"), 0).await.unwrap();
    let mut progress = w.progress();
    let start = *progress.borrow();
    assert!(s.txn(Txn::create("/p/a", "1")).await.unwrap().succeeded());
    for i in 0..5 {
        assert!(
            s.txn(Txn::create(format!("/q/{i}"), "x"))
                .await
                .unwrap()
                .succeeded()
        );
    }
    let head = s.revisions().await.unwrap().0;
    assert_eq!(head, start + 6);
    tokio::time::timeout(Duration::from_secs(10), progress.wait_for(|p| *p >= head))
        .await
        .expect("progress reaches the head")
        .unwrap();
    // Read before draining: the one matching write is already on the stream.
    let batch = w.next().await.unwrap().unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].kv.key, b"/p/a");
}
