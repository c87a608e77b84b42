//! Kelp's controller-manager: upstream's controllers as level-based reconcilers on shared
//! informers (kube-rs' reflectors) with kube-rs' controller runtime as the work queue. Every
//! controller writes as its own service account, with optimistic concurrency, and retries
//! with back-off; the set runs only while this process holds the
//! `kube-system/kube-controller-manager` Lease.

pub mod certificates;
pub mod credentials;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslicemirroring;
pub mod gc;
pub mod hpa;
pub mod job;
pub mod namespace;
pub mod nodelifecycle;
pub mod podgc;
pub mod replicaset;
pub mod replicationcontroller;
pub mod resourcequota;
pub mod revisions;
pub mod rootca;
pub mod serviceaccount;
pub mod servicecidrs;
pub mod statefulset;
pub mod tokens;
pub mod ttl;
mod util;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Node, Pod, ReplicationController, ResourceQuota, Secret,
    Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{IPAddress, ServiceCIDR};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kelp_client::Informer;
use kube::Api;
use kube::runtime::watcher;

pub use util::Error;

/// What the controller-manager is started with.
#[derive(Clone)]
pub struct Options {
    /// The client configuration of the controller-manager's own identity.
    pub config: kube::Config,
    /// The CA bundle published as `kube-root-ca.crt` in every namespace (PEM).
    pub root_ca_pem: String,
    /// This process among its peers (the Lease's holderIdentity).
    pub identity: String,
    /// The CA that signs approved CertificateSigningRequests (none: no signing).
    pub signing: Option<certificates::SigningCa>,
    /// The service-account signing key (PEM) the tokens controller signs legacy token
    /// secrets with (none: that controller does not run).
    pub service_account_key_pem: Option<String>,
}

/// The shared informers: one watch per resource for all controllers.
pub struct Informers {
    pub namespaces: Arc<Informer<Namespace>>,
    pub pods: Arc<Informer<Pod>>,
    pub replicasets: Arc<Informer<ReplicaSet>>,
    pub deployments: Arc<Informer<Deployment>>,
    pub serviceaccounts: Arc<Informer<ServiceAccount>>,
    pub configmaps: Arc<Informer<ConfigMap>>,
    pub jobs: Arc<Informer<Job>>,
    pub cronjobs: Arc<Informer<CronJob>>,
    pub daemonsets: Arc<Informer<DaemonSet>>,
    pub statefulsets: Arc<Informer<StatefulSet>>,
    pub nodes: Arc<Informer<Node>>,
    pub services: Arc<Informer<Service>>,
    pub endpoints: Arc<Informer<Endpoints>>,
    /// The slices the endpointslice controller manages.
    pub endpointslices: Arc<Informer<EndpointSlice>>,
    /// The slices the endpointslice mirroring controller manages.
    pub mirrored_slices: Arc<Informer<EndpointSlice>>,
    /// The nodes' Leases (kube-node-lease).
    pub node_leases: Arc<Informer<Lease>>,
    pub pdbs: Arc<Informer<PodDisruptionBudget>>,
    pub quotas: Arc<Informer<ResourceQuota>>,
    pub replicationcontrollers: Arc<Informer<ReplicationController>>,
    pub csrs: Arc<Informer<CertificateSigningRequest>>,
    pub hpas: Arc<Informer<HorizontalPodAutoscaler>>,
    /// Secrets of type `kubernetes.io/service-account-token`.
    pub token_secrets: Arc<Informer<Secret>>,
    pub servicecidrs: Arc<Informer<ServiceCIDR>>,
    /// The IPAddresses the API server's ClusterIP allocator made.
    pub ipaddresses: Arc<Informer<IPAddress>>,
}

impl Informers {
    fn start(client: &kube::Client) -> Informers {
        let all = watcher::Config::default();
        Informers {
            namespaces: Informer::spawn(Api::all(client.clone()), all.clone()),
            pods: Informer::spawn_trimmed(
                Api::all(client.clone()),
                all.clone(),
                kelp_client::informer::trim_pod,
            ),
            replicasets: Informer::spawn(Api::all(client.clone()), all.clone()),
            deployments: Informer::spawn(Api::all(client.clone()), all.clone()),
            serviceaccounts: Informer::spawn(Api::all(client.clone()), all.clone()),
            token_secrets: Informer::spawn(
                Api::all(client.clone()),
                all.clone().fields(&format!("type={}", tokens::SECRET_TYPE)),
            ),
            configmaps: Informer::spawn(
                Api::all(client.clone()),
                all.clone()
                    .fields(&format!("metadata.name={}", rootca::NAME)),
            ),
            jobs: Informer::spawn(Api::all(client.clone()), all.clone()),
            cronjobs: Informer::spawn(Api::all(client.clone()), all.clone()),
            daemonsets: Informer::spawn(Api::all(client.clone()), all.clone()),
            statefulsets: Informer::spawn(Api::all(client.clone()), all.clone()),
            nodes: Informer::spawn(Api::all(client.clone()), all.clone()),
            services: Informer::spawn(Api::all(client.clone()), all.clone()),
            endpoints: Informer::spawn(Api::all(client.clone()), all.clone()),
            pdbs: Informer::spawn(Api::all(client.clone()), all.clone()),
            quotas: Informer::spawn(Api::all(client.clone()), all.clone()),
            replicationcontrollers: Informer::spawn(Api::all(client.clone()), all.clone()),
            csrs: Informer::spawn(Api::all(client.clone()), all.clone()),
            hpas: Informer::spawn(Api::all(client.clone()), all.clone()),
            node_leases: Informer::spawn(
                Api::namespaced(client.clone(), "kube-node-lease"),
                all.clone(),
            ),
            servicecidrs: Informer::spawn(Api::all(client.clone()), all.clone()),
            ipaddresses: Informer::spawn(
                Api::all(client.clone()),
                all.clone().labels(&format!(
                    "ipaddress.kubernetes.io/managed-by={}",
                    servicecidrs::MANAGED_BY
                )),
            ),
            mirrored_slices: Informer::spawn(
                Api::all(client.clone()),
                all.clone().labels(&format!(
                    "{}={}",
                    endpoints::MANAGED_BY_LABEL,
                    endpointslicemirroring::MANAGED_BY
                )),
            ),
            endpointslices: Informer::spawn(
                Api::all(client.clone()),
                all.labels(&format!(
                    "{}={}",
                    endpoints::MANAGED_BY_LABEL,
                    endpoints::MANAGED_BY
                )),
            ),
        }
    }

    async fn ready(&self) {
        self.namespaces.ready().await;
        self.pods.ready().await;
        self.replicasets.ready().await;
        self.deployments.ready().await;
        self.serviceaccounts.ready().await;
        self.configmaps.ready().await;
        self.jobs.ready().await;
        self.cronjobs.ready().await;
        self.daemonsets.ready().await;
        self.statefulsets.ready().await;
        self.nodes.ready().await;
        self.services.ready().await;
        self.endpoints.ready().await;
        self.endpointslices.ready().await;
        self.mirrored_slices.ready().await;
        self.node_leases.ready().await;
        self.pdbs.ready().await;
        self.quotas.ready().await;
        self.replicationcontrollers.ready().await;
        self.csrs.ready().await;
        self.hpas.ready().await;
        self.token_secrets.ready().await;
        self.servicecidrs.ready().await;
        self.ipaddresses.ready().await;
    }
}

/// Runs the controller-manager until the process ends: leader election, then the controllers
/// while leading.
pub async fn run(mut options: Options) -> anyhow::Result<()> {
    kelp_client::configure(&mut options.config, "kube-controller-manager");
    let root = kube::Client::try_from(options.config.clone())?;
    let election = kelp_client::leader::Election::new("kube-controller-manager", &options.identity);
    election
        .run(root.clone(), || lead(root.clone(), options.clone()))
        .await;
    Ok(())
}

/// The controllers, for one term of leadership (dropping it stops them all).
async fn lead(root: kube::Client, options: Options) -> anyhow::Result<()> {
    let mut credentials = credentials::Credentials::new(root.clone(), options.config.clone())?;
    let informers = Arc::new(Informers::start(&root));
    informers.ready().await;
    tracing::info!("controller-manager: caches synced, starting controllers");
    let mut set = tokio::task::JoinSet::new();
    if let Some(pem) = &options.service_account_key_pem {
        // As upstream, with the controller-manager's own credentials: it mints the tokens.
        let keys = kelp_auth::serviceaccount::ServiceAccountKeys::from_pem(
            pem,
            kelp_auth::serviceaccount::LEGACY_ISSUER,
        )?;
        set.spawn(tokens::run(
            root.clone(),
            informers.clone(),
            keys,
            options.root_ca_pem.clone(),
        ));
    }
    let client = credentials.client("service-account-controller").await?;
    set.spawn(serviceaccount::run(client, informers.clone()));
    let client = credentials.client("root-ca-cert-publisher").await?;
    set.spawn(rootca::run(
        client,
        informers.clone(),
        options.root_ca_pem.clone(),
    ));
    let client = credentials.client("namespace-controller").await?;
    set.spawn(namespace::run(client, informers.clone()));
    let client = credentials.client("replicaset-controller").await?;
    set.spawn(replicaset::run(client, informers.clone()));
    let client = credentials.client("replication-controller").await?;
    set.spawn(replicationcontroller::run(client, informers.clone()));
    let client = credentials.client("deployment-controller").await?;
    set.spawn(deployment::run(client, informers.clone()));
    let client = credentials.client("job-controller").await?;
    set.spawn(job::run(client, informers.clone()));
    let client = credentials.client("cronjob-controller").await?;
    set.spawn(cronjob::run(client, informers.clone()));
    let client = credentials.client("ttl-after-finished-controller").await?;
    set.spawn(ttl::run(client, informers.clone()));
    let client = credentials.client("daemon-set-controller").await?;
    set.spawn(daemonset::run(client, informers.clone()));
    let client = credentials.client("statefulset-controller").await?;
    set.spawn(statefulset::run(client, informers.clone()));
    let endpoints_client = credentials.client("endpoint-controller").await?;
    let slices_client = credentials.client("endpointslice-controller").await?;
    set.spawn(endpoints::run(
        endpoints_client,
        slices_client,
        informers.clone(),
    ));
    let client = credentials
        .client("endpointslicemirroring-controller")
        .await?;
    set.spawn(endpointslicemirroring::run(client, informers.clone()));
    let client = credentials.client("disruption-controller").await?;
    set.spawn(disruption::run(client, informers.clone()));
    let client = credentials.client("resourcequota-controller").await?;
    set.spawn(resourcequota::run(client, informers.clone()));
    let client = credentials.client("node-controller").await?;
    set.spawn(nodelifecycle::run(client, informers.clone()));
    let client = credentials.client("horizontal-pod-autoscaler").await?;
    set.spawn(hpa::run(client, informers.clone()));
    let client = credentials.client("service-cidrs-controller").await?;
    set.spawn(servicecidrs::run(client, informers.clone()));
    let client = credentials.client("pod-garbage-collector").await?;
    set.spawn(podgc::run(client, informers.clone()));
    if let Some(ca) = options.signing.clone() {
        let client = credentials.client("certificate-controller").await?;
        set.spawn(certificates::run(
            client.clone(),
            client,
            informers.clone(),
            ca,
        ));
    }
    let client = credentials.client("generic-garbage-collector").await?;
    set.spawn(gc::run(client, root.clone()));
    // The controllers run until leadership ends (this future is then dropped, and the set
    // with it); one that returns is a bug worth a restart of the term.
    match set.join_next().await {
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(anyhow::anyhow!("a controller panicked: {e}")),
        _ => Err(anyhow::anyhow!("a controller stopped")),
    }
}
