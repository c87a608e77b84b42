//! A writer process for the storage crate's multi-process tests (several processes sharing
//! one PostgreSQL database, kill -9 during a batch). Not part of Kelp's interface.
//!
//! usage: kelp-storage-worker URL PREFIX WRITES CONCURRENCY VALUE_BYTES
//!
//! Runs CONCURRENCY tasks that together make WRITES successful writes: creates of
//! PREFIX/<n>, and compare-and-swap increments of the shared counters /hot/0../hot/3. Prints
//! `ack <revision> <key> <value>` for each acknowledged write, flushed at once, then `done`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kelp_storage::{Backend, Endpoint, Options, Txn, TxnOutcome};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: kelp-storage-worker URL PREFIX WRITES CONCURRENCY VALUE_BYTES");
        std::process::exit(2);
    }
    let number = |i: usize| -> usize {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!("argument {i} must be a number");
            std::process::exit(2)
        })
    };
    let (writes, concurrency, value_bytes) = (number(3), number(4), number(5));
    let endpoint = Endpoint::parse(&args[1]).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let options = Options {
        compact_interval: None,
        ..Options::default()
    };
    let backend = Backend::open(&endpoint, options).await.unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let prefix = args[2].clone();
    let counter = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let tasks = (0..concurrency).map(|t| {
        let (backend, prefix, counter, out) = (
            backend.clone(),
            prefix.clone(),
            counter.clone(),
            out.clone(),
        );
        tokio::spawn(async move {
            let pad = "x".repeat(value_bytes);
            loop {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                if n >= writes {
                    return;
                }
                let (key, value, outcome) = if n % 4 == 3 {
                    increment(&backend, &format!("/hot/{}", t % 4)).await
                } else {
                    let key = format!("{prefix}/{n}");
                    let value = format!("{n}:{pad}");
                    let o = backend.txn(Txn::create(key.clone(), value.clone())).await;
                    (key, value, o)
                };
                match outcome {
                    Ok(TxnOutcome::Succeeded { revision, .. }) => {
                        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                        let short: String = value.chars().take_while(|c| *c != ':').collect();
                        let _ = writeln!(out, "ack {revision} {key} {short}");
                        let _ = out.flush();
                    }
                    Ok(other) => panic!("write of {key} failed: {other:?}"),
                    Err(e) => {
                        // The datastore went away: the write may or may not have committed.
                        eprintln!("write of {key}: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        })
    });
    for t in futures::future::join_all(tasks).await {
        if t.is_err() {
            std::process::exit(1);
        }
    }
    println!("done");
}

/// Adds one to a counter with get + compare-and-swap, retrying on conflict.
async fn increment(
    backend: &Backend,
    key: &str,
) -> (String, String, kelp_storage::Result<TxnOutcome>) {
    loop {
        let (current, _) = match backend.get(key).await {
            Ok(c) => c,
            Err(e) => return (key.to_string(), String::new(), Err(e)),
        };
        let (txn, value) = match current {
            Some(kv) => {
                let n: u64 = String::from_utf8_lossy(&kv.value).parse().unwrap_or(0);
                let v = (n + 1).to_string();
                (Txn::update(key, kv.mod_revision, v.clone()), v)
            }
            None => (Txn::create(key, "1"), "1".to_string()),
        };
        match backend.txn(txn).await {
            Ok(TxnOutcome::Failed { .. }) => continue,
            other => return (key.to_string(), value, other),
        }
    }
}
