//! What every test stands on (upstream's test/e2e/framework): a fresh namespace per test,
//! unique names, polling, raw requests, and checks of API errors.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::Status as ErrorResponse;
use rand::Rng;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::Test;

/// A test's view of the cluster.
#[derive(Clone)]
pub struct Ctx {
    pub client: kube::Client,
    /// The test's own namespace, made for it and deleted after it.
    pub namespace: String,
    /// The kubectl of the run, for the tests that run one (upstream's framework.RunKubectl).
    kubectl: Option<Arc<KubectlEnv>>,
}

/// A kubectl to run against the cluster under test.
#[derive(Clone, Debug)]
pub struct Kubectl {
    /// The kubectl binary.
    pub binary: PathBuf,
    /// Passed as `--kubeconfig`; without it kubectl finds its own (`$KUBECONFIG` included).
    pub kubeconfig: Option<PathBuf>,
}

impl Kubectl {
    /// `$KELP_CONFORMANCE_KUBECTL`, the cluster's kubeconfig left to kubectl (`$KUBECONFIG`);
    /// None when the variable is unset or empty.
    pub fn from_env() -> Option<Kubectl> {
        let binary = std::env::var_os("KELP_CONFORMANCE_KUBECTL").filter(|b| !b.is_empty())?;
        Some(Kubectl {
            binary: PathBuf::from(binary),
            kubeconfig: None,
        })
    }
}

/// A run's kubectl with a discovery cache of the run's own (kubectl's `KUBECACHEDIR`), so
/// nothing from another cluster, or another run, is read from `~/.kube/cache`.
pub(crate) struct KubectlEnv {
    kubectl: Kubectl,
    cache: Option<tempfile::TempDir>,
}

impl KubectlEnv {
    pub(crate) fn new(kubectl: Kubectl) -> KubectlEnv {
        KubectlEnv {
            kubectl,
            cache: tempfile::tempdir().ok(),
        }
    }
}

/// What a raw request got back.
pub struct Raw {
    pub status: u16,
    pub content_type: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "the response is not JSON: {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl Ctx {
    /// The kind's API in the test's namespace.
    pub fn namespaced<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The kind's API across the cluster (cluster-scoped kinds, or all namespaces).
    pub fn all<K>(&self) -> Api<K>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        Api::all(self.client.clone())
    }

    pub fn cluster<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = ClusterResourceScope, DynamicType = ()>,
    {
        Api::all(self.client.clone())
    }

    /// `prefix-` and five random lowercase letters, as upstream's SimpleNameGenerator.
    pub fn unique(&self, prefix: &str) -> String {
        unique(prefix)
    }

    /// A GET of a raw path with this Accept header.
    pub async fn get_raw(&self, path: &str, accept: &str) -> anyhow::Result<Raw> {
        self.request("GET", path, accept, "", Vec::new()).await
    }

    /// A GET of a raw path with these headers (and no others of the test's own).
    pub async fn get_with_headers(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Raw> {
        let mut req = http::Request::builder().method("GET").uri(path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.send(req, Vec::new()).await
    }

    /// Runs the run's kubectl (with its `--kubeconfig`, when given, before `args`), `stdin`
    /// written to it: whether it exited successfully, its stdout and its stderr. An error when
    /// the run has no kubectl: a test that needs one fails, it is never skipped.
    pub async fn kubectl(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<(bool, String, String)> {
        use tokio::io::AsyncWriteExt;
        let mut cmd = self.kubectl_command(args)?;
        cmd.stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
        let binary = cmd.as_std().get_program().to_string_lossy().into_owned();
        let mut child = cmd.spawn().with_context(|| format!("running {binary}"))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // kubectl may exit before reading it all: its exit status tells.
            let _ = pipe.write_all(input.as_bytes()).await;
            drop(pipe);
        }
        let out = child
            .wait_with_output()
            .await
            .with_context(|| format!("waiting for {binary}"))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// The run's kubectl as [`Ctx::kubectl`] runs it (its `--kubeconfig`, then `args`, with the
    /// run's discovery cache), to be spawned by a test that keeps it running, as upstream's
    /// TestKubeconfig.KubectlCmd: `kubectl proxy`. The same error when the run has no kubectl.
    pub fn kubectl_command(&self, args: &[&str]) -> anyhow::Result<tokio::process::Command> {
        let Some(env) = &self.kubectl else {
            bail!(
                "this test runs kubectl, and this run has none: set KELP_CONFORMANCE_KUBECTL to a \
                 kubectl binary (the cluster's kubeconfig is taken from KUBECONFIG), or pass \
                 Options::kubectl to kelp_conformance::run_with"
            );
        };
        let mut cmd = tokio::process::Command::new(&env.kubectl.binary);
        if let Some(kubeconfig) = &env.kubectl.kubeconfig {
            let mut flag = OsString::from("--kubeconfig=");
            flag.push(kubeconfig);
            cmd.arg(flag);
        }
        cmd.args(args);
        if let Some(cache) = &env.cache {
            cmd.env("KUBECACHEDIR", cache.path());
        }
        Ok(cmd)
    }

    /// A bodiless request as another user (impersonated: the test's client may impersonate).
    pub async fn request_as(&self, user: &str, method: &str, path: &str) -> anyhow::Result<Raw> {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("Impersonate-User", user)
            .header(http::header::ACCEPT, "application/json");
        self.send(req, Vec::new()).await
    }

    /// Any request on a raw path.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        accept: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<Raw> {
        let mut req = http::Request::builder().method(method).uri(path);
        if !accept.is_empty() {
            req = req.header(http::header::ACCEPT, accept);
        }
        if !content_type.is_empty() {
            req = req.header(http::header::CONTENT_TYPE, content_type);
        }
        self.send(req, body).await
    }

    async fn send(&self, req: http::request::Builder, body: Vec<u8>) -> anyhow::Result<Raw> {
        let what = format!(
            "{} {}",
            req.method_ref().map(|m| m.to_string()).unwrap_or_default(),
            req.uri_ref().map(|u| u.to_string()).unwrap_or_default()
        );
        let resp = self
            .client
            .send(req.body(kube::client::Body::from(body))?)
            .await
            .with_context(|| what.clone())?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok(Raw {
            status,
            content_type,
            headers,
            body,
        })
    }

    /// A typed GET of a raw path.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let raw = self.get_raw(path, "application/json").await?;
        if raw.status != 200 {
            bail!(
                "GET {path}: {} {}",
                raw.status,
                String::from_utf8_lossy(&raw.body)
            );
        }
        Ok(serde_json::from_slice(&raw.body)?)
    }
}

pub fn unique(prefix: &str) -> String {
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect();
    format!("{prefix}-{suffix}")
}

/// The API error a call must have ended in.
pub fn api_error<T: std::fmt::Debug>(
    result: Result<T, kube::Error>,
) -> anyhow::Result<ErrorResponse> {
    match result {
        Err(kube::Error::Api(e)) => Ok(*e),
        Err(other) => bail!("expected an API error, got {other}"),
        Ok(v) => bail!("expected an API error, got success: {v:?}"),
    }
}

/// Polls `check` every 100 ms until it gives Some, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    eventually_every(Duration::from_millis(100), timeout, what, check).await
}

/// Polls `check` every `interval` until it gives Some, for at most `timeout` (upstream's
/// wait.PollUntilContextTimeout); an error from `check` ends the wait.
pub async fn eventually_every<T, F, Fut>(
    interval: Duration,
    timeout: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// The upstream framework's namespace name: the test's base name, then a random suffix.
fn namespace_for(test: &Test) -> String {
    let words: Vec<String> = test
        .name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty() && !w.starts_with("sig"))
        .take(3)
        .map(str::to_lowercase)
        .collect();
    let base: String = words.join("-").chars().take(40).collect();
    unique(&format!("e2e-{base}"))
}

/// Runs a test in a namespace of its own, and deletes the namespace after it.
pub(crate) async fn run_one(
    client: &kube::Client,
    test: &Test,
    kubectl: Option<Arc<KubectlEnv>>,
) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let name = namespace_for(test);
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"e2e-framework": "kelp-conformance"}}
    }))?;
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .context("creating the test's namespace")?;
    let ctx = Ctx {
        client: client.clone(),
        namespace: name.clone(),
        kubectl,
    };
    let result = (test.run)(ctx).await;
    let _ = namespaces.delete(&name, &DeleteParams::default()).await;
    result
}

/// A watch's events, as the tests read them.
pub type Events<K> =
    futures::stream::BoxStream<'static, Result<kube::api::WatchEvent<K>, kube::Error>>;

fn event_matches<K: PartialEq>(e: &kube::api::WatchEvent<K>, kind: &str, obj: Option<&K>) -> bool {
    use kube::api::WatchEvent::*;
    let (k, o) = match e {
        Added(o) => ("ADDED", o),
        Modified(o) => ("MODIFIED", o),
        Deleted(o) => ("DELETED", o),
        _ => return false,
    };
    k == kind && obj.is_none_or(|want| want == o)
}

/// Reads events until one of `kind` (equal to `obj` when given) arrives, for up to a minute
/// (upstream's expectEvent: other events are passed over).
pub async fn expect_event<K: PartialEq + Clone + std::fmt::Debug>(
    events: &mut Events<K>,
    kind: &str,
    obj: Option<&K>,
) -> anyhow::Result<K> {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!("timed out waiting for a {kind} event matching {obj:?}")
            })?;
        let Some(e) = next else {
            bail!("the watch closed before a {kind} event");
        };
        let e = e?;
        if event_matches(&e, kind, obj) {
            use kube::api::WatchEvent::*;
            return Ok(match e {
                Added(o) | Modified(o) | Deleted(o) => o,
                _ => unreachable!("matched events carry objects"),
            });
        }
    }
}

/// Fails if a `kind` event (equal to `obj` when given) arrives within `window`.
pub async fn expect_no_event<K: PartialEq + std::fmt::Debug>(
    events: &mut Events<K>,
    kind: &str,
    obj: Option<&K>,
    window: Duration,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(next) = tokio::time::timeout_at(deadline, events.next()).await {
        match next {
            Some(Ok(e)) if event_matches(&e, kind, obj) => {
                bail!("unexpected {kind} event: {e:?}")
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Ok(()),
        }
    }
    Ok(())
}

/// A typed object from JSON (the ports write their fixtures as upstream's YAML reads).
pub fn from<T: DeserializeOwned>(v: serde_json::Value) -> anyhow::Result<T> {
    Ok(serde_json::from_value(v)?)
}

/// client-go's RetryOnConflict with DefaultRetry: five tries, 10ms apart, while the attempt
/// ends in a 409.
pub async fn retry_on_conflict<T, F, Fut>(mut attempt: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(kube::Error::Api(e)) if e.code == 409 && tries < 4 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

/// podutil.IsPodReady: the pod's Ready condition is True.
pub fn is_ready(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

// --------------------------------------------------------------------------------- nodes

fn node_condition(node: &k8s_openapi::api::core::v1::Node, type_: &str) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

fn node_taints(node: &k8s_openapi::api::core::v1::Node) -> &[k8s_openapi::api::core::v1::Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

/// e2enode's IsConditionSetAsExpected(node, Ready, true): Ready is True and the node
/// controller's not-ready and unreachable NoExecute taints are gone.
pub fn node_ready(node: &k8s_openapi::api::core::v1::Node) -> bool {
    let controller_taint = node_taints(node).iter().any(|t| {
        t.effect == "NoExecute"
            && matches!(
                t.key.as_str(),
                "node.kubernetes.io/not-ready" | "node.kubernetes.io/unreachable"
            )
    });
    node_condition(node, "Ready").as_deref() == Some("True") && !controller_taint
}

/// e2enode's IsNodeSchedulable: not cordoned, Ready, and its network not marked unavailable.
pub fn node_schedulable(node: &k8s_openapi::api::core::v1::Node) -> bool {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    !cordoned
        && node_ready(node)
        && node_condition(node, "NetworkUnavailable").as_deref() != Some("True")
}

/// e2enode's isNodeUntainted: a pod tolerating nothing may land there (no NoSchedule or
/// NoExecute taint).
pub fn node_untainted(node: &k8s_openapi::api::core::v1::Node) -> bool {
    node_taints(node)
        .iter()
        .all(|t| t.effect != "NoSchedule" && t.effect != "NoExecute")
}

/// e2enode.GetReadySchedulableNodes: the schedulable (listed with upstream's field selector),
/// Ready, untainted nodes; an error when there are none.
pub async fn ready_schedulable_nodes(
    ctx: &Ctx,
) -> anyhow::Result<Vec<k8s_openapi::api::core::v1::Node>> {
    let api: Api<k8s_openapi::api::core::v1::Node> = ctx.cluster();
    let params = kube::api::ListParams::default().fields("spec.unschedulable=false");
    let nodes: Vec<_> = api
        .list(&params)
        .await?
        .items
        .into_iter()
        .filter(|n| node_schedulable(n) && node_untainted(n))
        .collect();
    anyhow::ensure!(
        !nodes.is_empty(),
        "there are currently no ready, schedulable nodes in the cluster"
    );
    Ok(nodes)
}

/// e2enode.GetRandomReadySchedulableNode.
pub async fn random_ready_schedulable_node(
    ctx: &Ctx,
) -> anyhow::Result<k8s_openapi::api::core::v1::Node> {
    let nodes = ready_schedulable_nodes(ctx).await?;
    let pick = rand::rng().random_range(0..nodes.len());
    Ok(nodes[pick].clone())
}

/// The discovery checks of upstream's API-operations tests: `/apis` lists `group` at
/// `version`, the group's document lists the version, and the version's resources hold each
/// of `resources`. `what` names the API in the failure messages.
pub async fn api_discovered(
    ctx: &Ctx,
    group: &str,
    version: &str,
    resources: &[&str],
    what: &str,
) -> anyhow::Result<()> {
    let has_version = |versions: &serde_json::Value| {
        versions
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["version"] == version)
    };
    let groups: serde_json::Value = ctx.get_json("/apis").await.context("getting /apis")?;
    let found = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|g| g["name"] == group && has_version(&g["versions"]));
    anyhow::ensure!(
        found,
        "expected {what} API group/version, got {}",
        groups["groups"]
    );
    let doc: serde_json::Value = ctx
        .get_json(&format!("/apis/{group}"))
        .await
        .with_context(|| format!("getting /apis/{group}"))?;
    anyhow::ensure!(
        has_version(&doc["versions"]),
        "expected {what} API version, got {}",
        doc["versions"]
    );
    let list: serde_json::Value = ctx
        .get_json(&format!("/apis/{group}/{version}"))
        .await
        .with_context(|| format!("getting /apis/{group}/{version}"))?;
    for wanted in resources {
        let found = list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["name"] == *wanted);
        anyhow::ensure!(found, "expected {wanted}, got {}", list["resources"]);
    }
    Ok(())
}
