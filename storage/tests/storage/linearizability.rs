//! Random concurrent histories of puts, creates, compare-and-swaps, deletes, gets and lists,
//! checked for linearizability against a sequential model of etcd's key-value store (with
//! stateright's tester), while a watch checks it saw every successful write once, in order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kelp_storage::{Backend, Compare, EventKind, KeyRange, Op, RangeRequest, Txn, TxnOutcome};
use rand::{Rng, SeedableRng};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

use crate::{TestDb, both_backends, collect_until};

both_backends!(random_concurrent_histories_are_linearizable);

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct KvModel {
    rev: i64,
    /// key -> (value, mod revision, create revision, version)
    keys: BTreeMap<String, (String, i64, i64, i64)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum KvOp {
    Get(String),
    List(String),
    Create(String, String),
    Update(String, i64, String),
    Put(String, String),
    Delete(String, i64),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum KvRet {
    /// (value, mod, create, version), head revision
    Get(Option<(String, i64, i64, i64)>, i64),
    /// (key, value, mod), head revision
    List(Vec<(String, String, i64)>, i64),
    Written(i64),
    /// The current (value, mod revision) returned by a failed compare.
    Failed(Option<(String, i64)>),
}

impl KvModel {
    fn write(&mut self, key: &str, value: Option<&str>) -> KvRet {
        self.rev += 1;
        match value {
            Some(v) => {
                let (create, version) =
                    self.keys.get(key).map_or((self.rev, 1), |c| (c.2, c.3 + 1));
                self.keys
                    .insert(key.to_string(), (v.to_string(), self.rev, create, version));
            }
            None => {
                self.keys.remove(key);
            }
        }
        KvRet::Written(self.rev)
    }
    fn failed(&self, key: &str) -> KvRet {
        KvRet::Failed(self.keys.get(key).map(|c| (c.0.clone(), c.1)))
    }
}

impl SequentialSpec for KvModel {
    type Op = KvOp;
    type Ret = KvRet;
    fn invoke(&mut self, op: &KvOp) -> KvRet {
        match op {
            KvOp::Get(k) => KvRet::Get(self.keys.get(k).cloned(), self.rev),
            KvOp::List(_) => KvRet::List(
                self.keys
                    .iter()
                    .map(|(k, c)| (k.clone(), c.0.clone(), c.1))
                    .collect(),
                self.rev,
            ),
            KvOp::Create(k, v) if !self.keys.contains_key(k) => self.write(k, Some(v)),
            KvOp::Update(k, r, v) if self.keys.get(k).is_some_and(|c| c.1 == *r) => {
                self.write(k, Some(v))
            }
            KvOp::Delete(k, r) if self.keys.get(k).is_some_and(|c| c.1 == *r) => {
                self.write(k, None)
            }
            KvOp::Put(k, v) => self.write(k, Some(v)),
            KvOp::Create(k, _) | KvOp::Update(k, _, _) | KvOp::Delete(k, _) => self.failed(k),
        }
    }
}

async fn run(s: &Backend, op: &KvOp) -> KvRet {
    let txn = match op {
        KvOp::Get(k) => {
            let (kv, head) = s.get(k.clone()).await.unwrap();
            let kv = kv.map(|kv| {
                (
                    String::from_utf8(kv.value).unwrap(),
                    kv.mod_revision,
                    kv.create_revision,
                    kv.version,
                )
            });
            return KvRet::Get(kv, head);
        }
        KvOp::List(prefix) => {
            let r = s
                .range(RangeRequest::new(KeyRange::prefix(prefix.clone())))
                .await
                .unwrap();
            let kvs = r
                .kvs
                .into_iter()
                .map(|kv| {
                    (
                        String::from_utf8(kv.key).unwrap(),
                        String::from_utf8(kv.value).unwrap(),
                        kv.mod_revision,
                    )
                })
                .collect();
            return KvRet::List(kvs, r.header_revision);
        }
        KvOp::Create(k, v) => Txn::create(k.clone(), v.clone()),
        KvOp::Update(k, r, v) => Txn::update(k.clone(), *r, v.clone()),
        KvOp::Put(k, v) => Txn {
            key: k.clone().into(),
            compare: Compare::Any,
            op: Op::Put {
                value: v.clone().into(),
                lease: 0,
            },
        },
        KvOp::Delete(k, r) => Txn::delete(k.clone(), *r),
    };
    match s.txn(txn).await.unwrap() {
        TxnOutcome::Succeeded { revision, .. } => KvRet::Written(revision),
        TxnOutcome::Failed { current, .. } => {
            KvRet::Failed(current.map(|kv| (String::from_utf8(kv.value).unwrap(), kv.mod_revision)))
        }
    }
}

async fn random_concurrent_histories_are_linearizable(db: &mut TestDb) {
    let s = db.open().await;
    for seed in 0..6u64 {
        let (start, _) = s.revisions().await.unwrap();
        let mut watch = s.watch(KeyRange::prefix("/lin/"), start + 1).await.unwrap();
        // Every history starts from an empty key space.
        let base = KvModel {
            rev: start,
            keys: BTreeMap::new(),
        };
        let tester = Arc::new(Mutex::new(LinearizabilityTester::<usize, KvModel>::new(
            base,
        )));
        let writes = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..4).map(|client| {
            let (s, tester, writes) = (s.clone(), tester.clone(), writes.clone());
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 100 + client as u64);
                let mut seen: BTreeMap<String, i64> = BTreeMap::new();
                for i in 0..25 {
                    let key = format!("/lin/{seed}/{}", rng.random_range(0..3));
                    let value = format!("c{client}-{i}");
                    // Compare against the revision this client last saw, sometimes stale.
                    let expected = seen.get(&key).copied().unwrap_or(1)
                        - i64::from(rng.random_range(0..5) == 0);
                    let op = match rng.random_range(0..12) {
                        0..=2 => KvOp::Get(key.clone()),
                        3 => KvOp::List(format!("/lin/{seed}/")),
                        4..=5 => KvOp::Create(key.clone(), value.clone()),
                        6..=8 => KvOp::Update(key.clone(), expected.max(1), value.clone()),
                        9 => KvOp::Put(key.clone(), value.clone()),
                        _ => KvOp::Delete(key.clone(), expected.max(1)),
                    };
                    tester
                        .lock()
                        .unwrap()
                        .on_invoke(client, op.clone())
                        .unwrap();
                    let ret = run(&s, &op).await;
                    tester
                        .lock()
                        .unwrap()
                        .on_return(client, ret.clone())
                        .unwrap();
                    match (&op, &ret) {
                        (KvOp::Get(k), KvRet::Get(Some(c), _)) => {
                            seen.insert(k.clone(), c.1);
                        }
                        (_, KvRet::Failed(Some((_, r)))) => {
                            if let KvOp::Create(k, _) | KvOp::Update(k, _, _) | KvOp::Delete(k, _) =
                                &op
                            {
                                seen.insert(k.clone(), *r);
                            }
                        }
                        (
                            KvOp::Create(k, v) | KvOp::Update(k, _, v) | KvOp::Put(k, v),
                            KvRet::Written(r),
                        ) => {
                            seen.insert(k.clone(), *r);
                            writes
                                .lock()
                                .unwrap()
                                .push((*r, k.clone(), Some(v.clone())));
                        }
                        (KvOp::Delete(k, _), KvRet::Written(r)) => {
                            writes.lock().unwrap().push((*r, k.clone(), None));
                        }
                        _ => {}
                    }
                }
            })
        });
        for c in futures::future::join_all(clients).await {
            c.unwrap();
        }
        {
            let tester = tester.lock().unwrap();
            assert!(
                tester.serialized_history().is_some(),
                "history {seed} is not linearizable: {tester:#?}"
            );
        }

        let mut writes = writes.lock().unwrap().clone();
        writes.sort();
        let (head, _) = s.revisions().await.unwrap();
        let events = if head > start {
            collect_until(&mut watch, head).await
        } else {
            vec![]
        };
        let observed: Vec<_> = events
            .iter()
            .map(|e| {
                let value = (e.kind == EventKind::Put)
                    .then(|| String::from_utf8(e.kv.value.clone()).unwrap());
                (
                    e.revision(),
                    String::from_utf8(e.kv.key.clone()).unwrap(),
                    value,
                )
            })
            .collect();
        assert_eq!(
            observed, writes,
            "the watch of history {seed} differs from its successful writes"
        );
    }
}
