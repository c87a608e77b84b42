//! Leader election by a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does:
//! the holder renews the lease every retry period and gives up leading when it could not
//! renew for the renew deadline; a candidate takes the lease once it saw no renewal for the
//! lease duration. Durations are upstream's defaults (15 s, 10 s, 2 s).

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Election {
    /// A lease in kube-system with upstream's timings.
    pub fn new(name: &str, identity: &str) -> Election {
        Election {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Runs `work` whenever this process leads, forever: when leadership is lost the work is
    /// dropped (cancelled) and the process becomes a candidate again.
    pub async fn run<F, Fut>(&self, client: kube::Client, mut work: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let api: Api<Lease> = Api::namespaced(client, &self.namespace);
        let mut seen = Observed::default();
        loop {
            self.acquire(&api, &mut seen).await;
            tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
            tokio::select! {
                result = work() => {
                    if let Err(e) = result {
                        tracing::error!(lease = %self.name, error = %e, "leader's work failed");
                    }
                    tokio::time::sleep(self.retry_period).await;
                }
                _ = self.keep(&api, &mut seen) => {
                    tracing::warn!(lease = %self.name, identity = %self.identity, "leadership lost");
                }
            }
        }
    }

    async fn acquire(&self, api: &Api<Lease>, seen: &mut Observed) {
        loop {
            match self.try_acquire_or_renew(api, seen).await {
                Attempt::Held => return,
                Attempt::Other { expires } => {
                    // Wake at the expiry if it comes before the next retry.
                    let wait = expires
                        .saturating_duration_since(Instant::now())
                        .min(self.retry_period)
                        .max(Duration::from_millis(50));
                    tokio::time::sleep(wait).await;
                }
                Attempt::Failed => tokio::time::sleep(self.retry_period).await,
            }
        }
    }

    /// Renews every retry period; returns once a renewal did not succeed within the renew
    /// deadline (or another holder took the lease).
    async fn keep(&self, api: &Api<Lease>, seen: &mut Observed) {
        let mut last = Instant::now();
        loop {
            tokio::time::sleep(self.retry_period).await;
            match self.try_acquire_or_renew(api, seen).await {
                Attempt::Held => last = Instant::now(),
                Attempt::Other { .. } => return,
                Attempt::Failed if last.elapsed() >= self.renew_deadline => return,
                Attempt::Failed => {}
            }
        }
    }

    async fn try_acquire_or_renew(&self, api: &Api<Lease>, seen: &mut Observed) -> Attempt {
        let now = MicroTime(jiff::Timestamp::now());
        let current = match api.get_opt(&self.name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(lease = %self.name, error = %e, "cannot read the lease");
                return Attempt::Failed;
            }
        };
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Attempt::Held,
                Err(_) => Attempt::Failed,
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(self.lease_duration);
        let expires = seen.observe(&spec) + duration;
        let renewed = if holder == self.identity {
            self.spec(spec.acquire_time.unwrap_or(now.clone()), now, transitions)
        } else if !holder.is_empty() && Instant::now() < expires {
            return Attempt::Other { expires };
        } else {
            self.spec(now.clone(), now, transitions + 1)
        };
        lease.spec = Some(renewed);
        match api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Attempt::Held,
            Err(e) => {
                tracing::debug!(lease = %self.name, error = %e, "cannot write the lease");
                Attempt::Failed
            }
        }
    }

    fn spec(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}

enum Attempt {
    Held,
    Other { expires: Instant },
    Failed,
}

/// When this process saw the lease's record change: a candidate measures the lease duration
/// from there (client-go's observedTime), not from the holder's clock. The holder's renewTime
/// only places the change within the interval since the previous look, so a candidate polling
/// every retry period is not a retry period late.
#[derive(Default)]
struct Observed {
    record: Option<(String, Option<String>)>,
    at: Option<Instant>,
    previous_look: Option<Instant>,
}

impl Observed {
    fn observe(&mut self, spec: &LeaseSpec) -> Instant {
        let now = Instant::now();
        let record = (
            spec.holder_identity.clone().unwrap_or_default(),
            spec.renew_time.as_ref().map(|t| t.0.to_string()),
        );
        if self.record.as_ref() != Some(&record) || self.at.is_none() {
            let mut at = now;
            if let (Some(previous), Some(renewed)) = (self.previous_look, &spec.renew_time) {
                let age = jiff::Timestamp::now().duration_since(renewed.0);
                let age = if age.is_negative() {
                    Duration::ZERO
                } else {
                    age.unsigned_abs()
                };
                at = now
                    .checked_sub(age)
                    .unwrap_or(previous)
                    .clamp(previous, now);
            }
            self.record = Some(record);
            self.at = Some(at);
        }
        self.previous_look = Some(now);
        self.at.unwrap_or(now)
    }
}
