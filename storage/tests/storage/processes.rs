//! Several OS processes on one database, kill -9 in the middle of a batch, connection loss
//! and a database that is down at start-up.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kelp_storage::{Backend, KeyRange, Options, RangeRequest, Revision, StorageError, Txn};

use crate::{TestDb, assert_contiguous, both_backends, collect_until, fold, test_options};

both_backends!(kill_9_in_the_middle_of_a_batch_is_all_or_nothing);

/// One `ack` line of the worker.
#[derive(Debug, Clone)]
struct Ack {
    revision: Revision,
    key: String,
    value: String,
}

struct Worker {
    child: Child,
    acks: Arc<Mutex<Vec<Ack>>>,
    done: Arc<Mutex<bool>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn spawn(
        url: &str,
        prefix: &str,
        writes: usize,
        concurrency: usize,
        value_bytes: usize,
    ) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kelp-storage-worker"))
            .args([
                url,
                prefix,
                &writes.to_string(),
                &concurrency.to_string(),
                &value_bytes.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn kelp-storage-worker");
        let stdout = child.stdout.take().expect("stdout");
        let acks = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(Mutex::new(false));
        let reader = {
            let (acks, done) = (acks.clone(), done.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let parts: Vec<&str> = line.split(' ').collect();
                    match parts.as_slice() {
                        ["ack", rev, key, value] => acks.lock().unwrap().push(Ack {
                            revision: rev.parse().expect("revision"),
                            key: key.to_string(),
                            value: value.to_string(),
                        }),
                        ["done"] => *done.lock().unwrap() = true,
                        _ => panic!("unexpected worker output {line:?}"),
                    }
                }
            })
        };
        Worker {
            child,
            acks,
            done,
            reader: Some(reader),
        }
    }

    fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Waits for the worker to finish; returns its acks.
    fn wait(mut self) -> Vec<Ack> {
        let status = self.child.wait().expect("wait worker");
        assert!(status.success(), "worker failed: {status}");
        self.reader.take().unwrap().join().unwrap();
        assert!(*self.done.lock().unwrap(), "worker did not finish");
        self.acks.lock().unwrap().clone()
    }

    /// kill -9; returns the acks printed before.
    fn kill(mut self) -> Vec<Ack> {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
        self.reader.take().unwrap().join().unwrap();
        self.acks.lock().unwrap().clone()
    }
}

/// Everything a fresh reader sees is the fold of one contiguous log, and `kv_current`
/// agrees with it.
async fn assert_consistent(s: &Backend) -> Vec<kelp_storage::Event> {
    let (head, _) = s.revisions().await.unwrap();
    let mut w = s.watch(KeyRange::prefix("/"), 1).await.unwrap();
    let log = if head > 0 {
        collect_until(&mut w, head).await
    } else {
        vec![]
    };
    assert_contiguous(&log, 1, head);
    let listed = s
        .range(RangeRequest::new(KeyRange::prefix("/")))
        .await
        .unwrap();
    assert_eq!(listed.header_revision, head);
    let listed: BTreeMap<_, _> = listed
        .kvs
        .into_iter()
        .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
        .collect();
    assert_eq!(
        listed,
        fold(&log, head),
        "the head state is not the fold of the log"
    );
    log
}

fn assert_acks_durable(log: &[kelp_storage::Event], acks: &[Ack]) {
    let by_rev: BTreeMap<Revision, &kelp_storage::Event> =
        log.iter().map(|e| (e.revision(), e)).collect();
    for ack in acks {
        let e = by_rev
            .get(&ack.revision)
            .unwrap_or_else(|| panic!("acknowledged write {ack:?} is lost"));
        assert_eq!(String::from_utf8_lossy(&e.kv.key), ack.key, "{ack:?}");
        let value = String::from_utf8_lossy(&e.kv.value);
        assert_eq!(value.split(':').next().unwrap(), ack.value, "{ack:?}");
    }
}

async fn kill_9_in_the_middle_of_a_batch_is_all_or_nothing(db: &mut TestDb) {
    let url = db.url();
    let mut total_acked = 0;
    for round in 0..3 {
        // 64 writers with 16 KiB values: batches are large and take a while to commit.
        let worker = Worker::spawn(&url, &format!("/kill/{round}"), 1_000_000, 64, 16 * 1024);
        let deadline = Instant::now() + Duration::from_secs(60);
        while worker.acked() < 300 + round * 97 {
            assert!(Instant::now() < deadline, "worker made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        let acks = worker.kill();
        total_acked += acks.len();

        let s = crate::open_with(db, test_options()).await;
        let log = assert_consistent(&s).await;
        assert_acks_durable(&log, &acks);
        // The store goes on from the recovered head.
        let head = s.revisions().await.unwrap().0;
        assert_eq!(
            s.txn(Txn::create(format!("/after/{round}"), "v"))
                .await
                .unwrap()
                .revision(),
            Some(head + 1)
        );
        s.close().await;
    }
    assert!(total_acked >= 900);
}

/// Three processes (two workers and this test) write to one PostgreSQL database at once,
/// including compare-and-swap increments of shared counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_processes_share_one_gapless_revision_order() {
    let db = TestDb::postgres();
    let s = db.open().await;
    let mut watch = s.watch(KeyRange::prefix("/"), 1).await.unwrap();
    let workers: Vec<Worker> = (0..2)
        .map(|i| Worker::spawn(&db.url(), &format!("/proc/{i}"), 400, 8, 64))
        .collect();
    let mut mine = Vec::new();
    for i in 0..200 {
        mine.push(
            s.txn(Txn::create(format!("/proc/test/{i}"), "v"))
                .await
                .unwrap()
                .revision()
                .unwrap(),
        );
    }
    let acks: Vec<Ack> = workers.into_iter().flat_map(Worker::wait).collect();
    let (head, _) = s.revisions().await.unwrap();
    assert_eq!(head, 1000);

    let mut revs: BTreeSet<Revision> = mine.iter().copied().collect();
    for a in &acks {
        assert!(
            revs.insert(a.revision),
            "revision {} given twice",
            a.revision
        );
    }
    assert_eq!(revs, (1..=head).collect(), "revisions are not 1..=head");

    // This process's watch saw the other processes' writes, each once, in order.
    let log = collect_until(&mut watch, head).await;
    assert_contiguous(&log, 1, head);
    assert_acks_durable(&log, &acks);

    // Each successful increment was applied exactly once across processes.
    let increments = acks.iter().filter(|a| a.key.starts_with("/hot/")).count() as u64;
    let counters = s
        .range(RangeRequest::new(KeyRange::prefix("/hot/")))
        .await
        .unwrap();
    let sum: u64 = counters
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, increments);
    assert_eq!(increments, 200);
    assert_consistent(&s).await;
}

/// Connections cut by the server (twice), then a server restart: writes go on after the
/// outage, and the watch delivers every committed write exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_watches_resume_across_connection_loss_and_restart() {
    let mut db = TestDb::postgres();
    let s = db.open().await;
    let mut watch = s.watch(KeyRange::prefix("/"), 0).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match s
                    .txn(Txn::put(format!("/cut/{}", i % 20), format!("{i}")))
                    .await
                {
                    Ok(_) => ok += 1,
                    Err(StorageError::Unavailable(_)) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("{e}"),
                }
                i += 1;
            }
            (ok, failed)
        })
    };
    let other = Worker::spawn(&db.url(), "/cut-proc", 300, 2, 10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.pg().unwrap().terminate_connections();
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.pg().unwrap().terminate_connections();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restart = tokio::task::spawn_blocking(move || {
        db.pg().unwrap().restart();
        db
    });
    let db = restart.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = s.revisions().await.unwrap().0;
    let mut after_outage = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.revisions().await.map(|r| r.0).unwrap_or(before) < before + 50 {
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
        after_outage += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, _failed) = writer.await.unwrap();
    // The worker process lost its connections too; it reports failures and goes on.
    let other = tokio::task::spawn_blocking(move || other.wait())
        .await
        .unwrap();
    assert!(ok > 100, "only {ok} writes succeeded ({after_outage})");

    let (head, _) = s.revisions().await.unwrap();
    let events = collect_until(&mut watch, head).await;
    assert_contiguous(&events, 1, head);
    assert_acks_durable(&events, &other);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_at_start_up_is_retried_until_it_is_up() {
    let mut db = TestDb::postgres();
    db.pg().unwrap().stop();
    let endpoint = db.endpoint();
    let opening = tokio::spawn(async move {
        let started = Instant::now();
        let b = Backend::open(
            &endpoint,
            Options {
                connect_timeout: Some(Duration::from_secs(60)),
                ..test_options()
            },
        )
        .await;
        (b, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !opening.is_finished(),
        "open returned while the database was down"
    );
    let db = tokio::task::spawn_blocking(move || {
        db.pg().unwrap().restart();
        db
    })
    .await
    .unwrap();
    let (backend, waited) = opening.await.unwrap();
    let backend = backend.expect("open after the database came up");
    assert!(waited >= Duration::from_millis(1500));
    assert_eq!(
        backend
            .txn(Txn::create("/up", "v"))
            .await
            .unwrap()
            .revision(),
        Some(1)
    );

    // With a deadline, an unreachable database is a clear error naming it.
    let port = db.pg_port();
    drop(db);
    let e = Backend::open(
        &kelp_storage::Endpoint::parse(&format!(
            "postgres://postgres:secret@127.0.0.1:{port}/postgres"
        ))
        .unwrap(),
        Options {
            connect_timeout: Some(Duration::from_millis(500)),
            ..test_options()
        },
    )
    .await
    .err()
    .expect("open must fail");
    let msg = e.to_string();
    assert!(matches!(e, StorageError::Unavailable(_)), "{msg}");
    assert!(
        msg.contains("unreachable") && msg.contains(&format!("127.0.0.1:{port}")),
        "{msg}"
    );
    assert!(!msg.contains("secret"), "the password leaked: {msg}");
}
