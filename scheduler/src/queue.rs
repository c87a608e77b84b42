//! The scheduling queue (upstream's PriorityQueue): activeQ ordered by priority then arrival,
//! backoffQ for pods that failed recently (1 s doubling to 10 s), and the unschedulable pods,
//! which wait for a cluster change that may help them (or five minutes).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::cache::PodInfo;

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Debug, PartialEq)]
enum State {
    Active,
    Backoff(Instant),
    Unschedulable(Instant),
    /// Popped: being scheduled or bound.
    InFlight {
        moves: u64,
    },
}

struct Entry {
    pod: Arc<PodInfo>,
    /// What a requeueing update is compared by: labels and spec, not status.
    shape: u64,
    attempts: u32,
    failed_at: Instant,
    seq: u64,
    state: State,
}

#[derive(Default)]
pub struct Queue {
    entries: HashMap<String, Entry>,
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    backoff: BinaryHeap<Reverse<(Instant, String)>>,
    seq: u64,
    unschedulable: std::collections::HashSet<String>,
    /// Counts cluster changes that may make pods schedulable: a pod that fails while one
    /// happened retries after its backoff instead of waiting.
    moves: u64,
}

fn shape(pod: &PodInfo) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pod.pod.metadata.labels.hash(&mut h);
    serde_json::to_string(&pod.pod.spec)
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

impl Queue {
    fn push_active(&mut self, key: &str) {
        self.unschedulable.remove(key);
        self.seq += 1;
        if let Some(e) = self.entries.get_mut(key) {
            e.seq = self.seq;
            e.state = State::Active;
            self.active
                .push((e.pod.priority, Reverse(self.seq), key.to_string()));
        }
    }

    /// A pending pod this scheduler is responsible for, new or updated.
    pub fn add_or_update(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let key = pod.key.clone();
        let new_shape = shape(&pod);
        match self.entries.get_mut(&key) {
            None => {
                self.entries.insert(
                    key.clone(),
                    Entry {
                        pod,
                        shape: new_shape,
                        attempts: 0,
                        failed_at: now,
                        seq: 0,
                        state: State::Active,
                    },
                );
                self.push_active(&key);
            }
            Some(e) => {
                let changed = e.shape != new_shape || e.pod.uid != pod.uid;
                e.pod = pod;
                e.shape = new_shape;
                // An update that may change the outcome brings an unschedulable pod back.
                if changed && matches!(e.state, State::Unschedulable(_)) {
                    self.requeue(&key, now);
                }
            }
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
        self.unschedulable.remove(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    fn backoff_for(attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(10);
        (INITIAL_BACKOFF * (1u32 << shift)).min(MAX_BACKOFF)
    }

    /// To backoffQ if still backing off, else to activeQ.
    fn requeue(&mut self, key: &str, now: Instant) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        let until = e.last_failure_backoff();
        if until > now {
            e.state = State::Backoff(until);
            self.unschedulable.remove(key);
            self.backoff.push(Reverse((until, key.to_string())));
        } else {
            self.push_active(key);
        }
    }

    /// The most important active pod, now in flight.
    pub fn pop(&mut self, now: Instant) -> Option<Arc<PodInfo>> {
        self.flush(now);
        while let Some((_, Reverse(seq), key)) = self.active.pop() {
            if let Some(e) = self.entries.get_mut(&key)
                && e.seq == seq
                && e.state == State::Active
            {
                e.attempts += 1;
                e.state = State::InFlight { moves: self.moves };
                return Some(e.pod.clone());
            }
        }
        None
    }

    /// The pod could not be placed: unschedulable until something changes, or back off
    /// when something changed while it was being tried (or the failure was an error).
    pub fn failed(&mut self, key: &str, error: bool, now: Instant) {
        let moves = self.moves;
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        let changed = matches!(e.state, State::InFlight { moves: m } if m != moves);
        e.failed_at = now;
        if error || changed {
            let until = e.last_failure_backoff();
            e.state = State::Backoff(until);
            self.backoff.push(Reverse((until, key.to_string())));
        } else {
            e.state = State::Unschedulable(now);
            self.unschedulable.insert(key.to_string());
        }
    }

    /// The pod was bound (or is gone): the queue forgets it.
    pub fn done(&mut self, key: &str) {
        self.remove(key);
    }

    /// A cluster change that may make unschedulable pods fit (a node came or changed, a pod
    /// went away).
    pub fn move_all(&mut self, now: Instant) {
        self.moves += 1;
        let keys: Vec<String> = self.unschedulable.drain().collect();
        for k in keys {
            self.requeue(&k, now);
        }
    }

    /// Moves what finished backing off to activeQ, and pods unschedulable for too long.
    pub fn flush(&mut self, now: Instant) {
        while let Some(Reverse((until, _))) = self.backoff.peek() {
            if *until > now {
                break;
            }
            let Some(Reverse((until, key))) = self.backoff.pop() else {
                break;
            };
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.state == State::Backoff(until))
            {
                self.push_active(&key);
            }
        }
        let stale: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|k| {
                self.entries.get(*k).is_some_and(|e| {
                    matches!(e.state, State::Unschedulable(since) if now.duration_since(since) >= MAX_UNSCHEDULABLE)
                })
            })
            .cloned()
            .collect();
        for k in stale {
            self.push_active(&k);
        }
    }

    /// When the next backoff ends.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((t, _))| *t)
    }

    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Entry {
    /// When the backoff after the last failure ends.
    fn last_failure_backoff(&self) -> Instant {
        self.failed_at + Queue::backoff_for(self.attempts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, priority: i32) -> Arc<PodInfo> {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": {"containers": [{"name": "c"}], "priority": priority}
        }))
        .expect("pod");
        Arc::new(PodInfo::new(Arc::new(pod)))
    }

    #[test]
    fn priority_order_backoff_and_moves() {
        let mut q = Queue::default();
        let t = Instant::now();
        let at = |secs: f64| t + Duration::from_secs_f64(secs);
        q.add_or_update(info("low", 0), t);
        q.add_or_update(info("high", 100), t);
        q.add_or_update(info("low2", 0), t);
        let order: Vec<String> = std::iter::from_fn(|| q.pop(t))
            .map(|p| p.key.clone())
            .collect();
        assert_eq!(order, ["default/high", "default/low", "default/low2"]);
        // Failed with nothing changed: unschedulable, not retried by time alone (< 5 min).
        q.failed("default/high", false, t);
        assert!(q.pop(at(60.0)).is_none());
        // A change moves it; its backoff (1 s after one attempt) has long passed.
        q.move_all(at(60.0));
        assert_eq!(
            q.pop(at(60.0)).map(|p| p.key.clone()).as_deref(),
            Some("default/high")
        );
        // A change while in flight: it backs off (2 s after two attempts), then retries.
        q.move_all(at(60.0));
        q.failed("default/high", false, at(60.0));
        assert!(q.pop(at(61.0)).is_none());
        assert_eq!(q.next_wakeup(), Some(at(62.0)));
        assert_eq!(
            q.pop(at(62.1)).map(|p| p.key.clone()).as_deref(),
            Some("default/high")
        );
        // Five minutes unschedulable: retried anyway.
        q.failed("default/high", false, at(63.0));
        assert!(q.pop(at(100.0)).is_none());
        assert!(q.pop(at(363.0)).is_some());
        q.done("default/high");
        assert!(!q.contains("default/high"));
    }
}
