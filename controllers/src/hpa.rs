//! The horizontal pod autoscaler controller (upstream's podautoscaler.HorizontalController):
//! every 15 seconds each HorizontalPodAutoscaler reads its target's scale subresource, keeps
//! the replica count within minReplicas..maxReplicas, and between them follows its metrics.
//! Resource metrics (cpu, memory; per pod or per container) come from the resource metrics
//! API (`metrics.k8s.io`) as upstream's replica calculator reads them; a cluster that serves
//! none — Kelp serves none of its own — gets upstream's answer: the ScalingActive condition
//! False with FailedGetResourceMetric, and the bounds still enforced. Recommendations are
//! stabilized (scale-down over five minutes by default) and bounded by the scaling policies
//! of `spec.behavior` (upstream's defaults without one). Status (current and desired
//! replicas, current metrics, lastScaleTime), the AbleToScale / ScalingActive /
//! ScalingLimited conditions and the SuccessfulRescale events are upstream's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kelp_admission::quantity::Quantity;
use kelp_client::events::Recorder;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::runtime::controller::{Action, Controller};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::Informers;
use crate::util::{Error, drive};

/// How often each autoscaler is looked at (upstream's --horizontal-pod-autoscaler-sync-period).
const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// A ratio this close to 1 changes nothing (--horizontal-pod-autoscaler-tolerance).
const TOLERANCE: f64 = 0.1;
/// The default scale-down stabilization window
/// (--horizontal-pod-autoscaler-downscale-stabilization).
const DOWNSCALE_WINDOW: Duration = Duration::from_secs(300);
/// A cpu sample of a pod younger than this needs the pod Ready
/// (--horizontal-pod-autoscaler-cpu-initialization-period).
const CPU_INITIALIZATION: i64 = 300;

struct Ctx {
    client: kube::Client,
    events: Recorder,
    /// Scale targets' resources by `apiVersion/kind`.
    kinds: Mutex<HashMap<String, ApiResource>>,
    /// Per autoscaler: recent recommendations (for stabilization) and rescales (for the
    /// scaling policies' periods).
    history: Mutex<HashMap<String, History>>,
}

#[derive(Default)]
struct History {
    recommendations: VecDeque<(Instant, i32)>,
    /// (when, replicas added — negative when removed)
    changes: VecDeque<(Instant, i32)>,
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let controller = Controller::for_stream(informers.hpas.changes(), informers.hpas.store());
    let events = Recorder::spawn(client.clone(), "horizontal-pod-autoscaler", String::new());
    let ctx = Arc::new(Ctx {
        client,
        events,
        kinds: Mutex::default(),
        history: Mutex::default(),
    });
    drive("horizontal-pod-autoscaler", controller, reconcile, ctx).await
}

impl Ctx {
    fn event(
        &self,
        hpa: &HorizontalPodAutoscaler,
        type_: &'static str,
        reason: &str,
        message: String,
    ) {
        self.events
            .record(hpa.object_ref(&()), type_, reason, "", message);
    }

    fn history(&self) -> std::sync::MutexGuard<'_, HashMap<String, History>> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The target's resource, found by discovery once per kind.
    async fn resource(&self, api_version: &str, kind: &str) -> anyhow::Result<ApiResource> {
        let key = format!("{api_version}/{kind}");
        if let Some(ar) = self
            .kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(ar.clone());
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, _) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| {
                anyhow::anyhow!("unable to determine resource for scale target reference: {e}")
            })?;
        self.kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, ar.clone());
        Ok(ar)
    }
}

fn set_condition(
    status: &mut HorizontalPodAutoscalerStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: String,
) {
    let list = status.conditions.get_or_insert_default();
    let value = if value { "True" } else { "False" };
    match list.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = Some(Time(jiff::Timestamp::now()));
            }
            c.status = value.into();
            c.reason = Some(reason.into());
            c.message = Some(message);
        }
        None => list.push(HorizontalPodAutoscalerCondition {
            type_: type_.into(),
            status: value.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: Some(Time(jiff::Timestamp::now())),
        }),
    }
}

async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if hpa.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = hpa.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", hpa.name_any());
    let spec = hpa.spec.clone().unwrap_or_default();
    let original = hpa.status.clone();
    let mut status = hpa.status.clone().unwrap_or_default();
    let target = &spec.scale_target_ref;
    let reference = format!("{}/{}", target.kind, target.name);
    let api_version = target.api_version.clone().unwrap_or_else(|| "v1".into());

    // The target's scale.
    let scaled = async {
        let ar = ctx.resource(&api_version, &target.kind).await?;
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
        let scale = api.get_scale(&target.name).await?;
        anyhow::Ok((api, scale))
    }
    .await;
    let (api, mut scale) = match scaled {
        Ok(s) => s,
        Err(e) => {
            ctx.event(&hpa, "Warning", "FailedGetScale", format!("{e:#}"));
            set_condition(
                &mut status,
                "AbleToScale",
                false,
                "FailedGetScale",
                format!("the HPA controller was unable to get the target's current scale: {e:#}"),
            );
            write_status(&ctx.client, &hpa, original, status).await?;
            return Ok(Action::requeue(SYNC_PERIOD));
        }
    };
    set_condition(
        &mut status,
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale".into(),
    );
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let mut metric_statuses = Vec::new();
    let mut reason = String::new();
    let (desired, rescale) = if current == 0 && min != 0 {
        set_condition(
            &mut status,
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
        );
        (0, false)
    } else if current > max {
        reason = "Current number of replicas above Spec.MaxReplicas".into();
        (max, true)
    } else if current < min {
        reason = "Current number of replicas below Spec.MinReplicas".into();
        (min, true)
    } else {
        let selector = scale.status.as_ref().and_then(|s| s.selector.clone());
        match replicas_for_metrics(
            &ctx.client,
            &ns,
            &spec.metrics.clone().unwrap_or_default(),
            selector.as_deref(),
            current,
        )
        .await
        {
            Err(failure) => {
                set_condition(
                    &mut status,
                    "ScalingActive",
                    false,
                    &failure.reason,
                    format!(
                        "the HPA was unable to compute the replica count: {}",
                        failure.message
                    ),
                );
                ctx.event(&hpa, "Warning", &failure.reason, failure.message.clone());
                ctx.event(
                    &hpa,
                    "Warning",
                    "FailedComputeMetricsReplicas",
                    format!(
                        "invalid metrics ({} invalid out of {}), first error is: {}",
                        failure.invalid, failure.total, failure.message
                    ),
                );
                status.current_replicas = Some(current);
                status.current_metrics = (!failure.statuses.is_empty()).then_some(failure.statuses);
                write_status(&ctx.client, &hpa, original, status).await?;
                return Ok(Action::requeue(SYNC_PERIOD));
            }
            Ok(found) => {
                set_condition(
                    &mut status,
                    "ScalingActive",
                    true,
                    "ValidMetricFound",
                    format!(
                        "the HPA was able to successfully calculate a replica count from {}",
                        found.metric
                    ),
                );
                metric_statuses = found.statuses;
                if found.replicas > current {
                    reason = format!("{} above target", found.metric);
                } else {
                    reason = "All metrics below target".into();
                }
                let desired = {
                    let mut history = ctx.history();
                    let h = history.entry(key.clone()).or_default();
                    normalize(
                        &mut status,
                        h,
                        spec.behavior.as_ref(),
                        current,
                        found.replicas,
                        min,
                        max,
                    )
                };
                (desired, desired != current)
            }
        }
    };

    let desired = if rescale {
        scale.spec.get_or_insert_default().replicas = Some(desired);
        match api
            .replace_scale(&target.name, &PostParams::default(), &scale)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                ctx.event(
                    &hpa,
                    "Warning",
                    "FailedRescale",
                    format!("New size: {desired}; reason: {reason}; error: {e}"),
                );
                set_condition(
                    &mut status,
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {e}"),
                );
                write_status(&ctx.client, &hpa, original, status).await?;
                return Err(anyhow::anyhow!("failed to rescale {reference}: {e}").into());
            }
        }
        set_condition(
            &mut status,
            "AbleToScale",
            true,
            "SucceededRescale",
            format!("the HPA controller was able to update the target scale to {desired}"),
        );
        ctx.event(
            &hpa,
            "Normal",
            "SuccessfulRescale",
            format!("New size: {desired}; reason: {reason}"),
        );
        ctx.history()
            .entry(key)
            .or_default()
            .changes
            .push_back((Instant::now(), desired - current));
        status.last_scale_time = Some(Time(jiff::Timestamp::now()));
        desired
    } else {
        current
    };
    status.current_replicas = Some(current);
    status.desired_replicas = desired;
    status.current_metrics = (!metric_statuses.is_empty()).then_some(metric_statuses);
    write_status(&ctx.client, &hpa, original, status).await?;
    Ok(Action::requeue(SYNC_PERIOD))
}

async fn write_status(
    client: &kube::Client,
    hpa: &HorizontalPodAutoscaler,
    original: Option<HorizontalPodAutoscalerStatus>,
    status: HorizontalPodAutoscalerStatus,
) -> Result<(), Error> {
    if original.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<HorizontalPodAutoscaler> =
        Api::namespaced(client.clone(), &hpa.namespace().unwrap_or_default());
    let mut updated = hpa.clone();
    updated.status = Some(status);
    match api
        .replace_status(&hpa.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(()),
        // A newer version: the next look writes against it.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What the metrics recommend.
struct Found {
    replicas: i32,
    /// The metric the recommendation came from, as upstream names it in its messages.
    metric: String,
    statuses: Vec<MetricStatus>,
}

/// Why no recommendation could be made.
struct Failure {
    reason: String,
    message: String,
    invalid: usize,
    total: usize,
    statuses: Vec<MetricStatus>,
}

/// The largest recommendation of the metrics that could be read (upstream's
/// computeReplicasForMetrics); a failure when none could.
async fn replicas_for_metrics(
    client: &kube::Client,
    ns: &str,
    metrics: &[MetricSpec],
    selector: Option<&str>,
    current: i32,
) -> Result<Found, Failure> {
    // An autoscaler without metrics autoscales on cpu at 80% (upstream's defaulting).
    let default = [
        serde_json::from_value::<MetricSpec>(json!({"type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}))
        .unwrap_or_default(),
    ];
    let metrics = if metrics.is_empty() {
        &default[..]
    } else {
        metrics
    };
    let mut best: Option<(i32, String)> = None;
    let mut statuses = Vec::new();
    let mut first_error: Option<(String, String)> = None;
    let mut invalid = 0;
    for m in metrics {
        match replicas_for_metric(client, ns, m, selector, current).await {
            Ok((replicas, name, status)) => {
                statuses.push(status);
                if best.as_ref().is_none_or(|(b, _)| replicas > *b) {
                    best = Some((replicas, name));
                }
            }
            Err((reason, message)) => {
                invalid += 1;
                first_error.get_or_insert((reason, message));
            }
        }
    }
    match (best, first_error) {
        (Some((replicas, metric)), _) => Ok(Found {
            replicas,
            metric,
            statuses,
        }),
        (None, Some((reason, message))) => Err(Failure {
            reason,
            message,
            invalid,
            total: metrics.len(),
            statuses,
        }),
        (None, None) => Err(Failure {
            reason: "InvalidMetricSourceType".into(),
            message: "no metrics".into(),
            invalid: 0,
            total: 0,
            statuses,
        }),
    }
}

/// One metric's recommendation: (replicas, metric name, its status), or (reason, message).
async fn replicas_for_metric(
    client: &kube::Client,
    ns: &str,
    metric: &MetricSpec,
    selector: Option<&str>,
    current: i32,
) -> Result<(i32, String, MetricStatus), (String, String)> {
    let (resource, container, target) = match metric.type_.as_str() {
        "Resource" => {
            let Some(r) = metric.resource.as_ref() else {
                return Err((
                    "InvalidMetricSourceType".into(),
                    "resource metric without its source".into(),
                ));
            };
            (r.name.clone(), None, r.target.clone())
        }
        "ContainerResource" => {
            let Some(r) = metric.container_resource.as_ref() else {
                return Err((
                    "InvalidMetricSourceType".into(),
                    "container resource metric without its source".into(),
                ));
            };
            (r.name.clone(), Some(r.container.clone()), r.target.clone())
        }
        "Pods" => {
            return Err((
                "FailedGetPodsMetric".into(),
                "unable to get metric: unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered".into(),
            ));
        }
        "Object" => {
            return Err((
                "FailedGetObjectMetric".into(),
                "unable to get metric: unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered".into(),
            ));
        }
        "External" => {
            return Err((
                "FailedGetExternalMetric".into(),
                "unable to get external metric: unable to fetch metrics from external metrics API: no external metrics API (external.metrics.k8s.io) registered".into(),
            ));
        }
        other => {
            return Err((
                "InvalidMetricSourceType".into(),
                format!("unknown metric source type {other:?}"),
            ));
        }
    };
    let failed = if container.is_some() {
        "FailedGetContainerResourceMetric"
    } else {
        "FailedGetResourceMetric"
    };
    let Some(selector) = selector else {
        return Err(("InvalidSelector".into(), "selector is required".into()));
    };
    let usage = pod_metrics(client, ns, selector, &resource, container.as_deref())
        .await
        .map_err(|e| {
            (
                failed.to_string(),
                format!("failed to get {resource} utilization: unable to get metrics for resource {resource}: unable to fetch metrics from resource metrics API: {e}"),
            )
        })?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| {
            (
                failed.to_string(),
                format!("unable to get pods while calculating replica count: {e}"),
            )
        })?
        .items;
    let samples = samples(&pods, &usage, &resource, container.as_deref()).map_err(|e| {
        (
            failed.to_string(),
            format!("failed to get {resource} utilization: {e}"),
        )
    })?;
    let what = match (&container, target.type_.as_str()) {
        (Some(c), "Utilization") => format!(
            "{resource} container resource utilization (percentage of request) of container {c}"
        ),
        (None, "Utilization") => format!("{resource} resource utilization (percentage of request)"),
        (Some(c), _) => format!("{resource} container resource of container {c}"),
        (None, _) => format!("{resource} resource"),
    };
    let (replicas, current_value) = match (
        target.type_.as_str(),
        target.average_utilization,
        &target.average_value,
    ) {
        ("Utilization", Some(percent), _) => {
            let (replicas, utilization, average) = utilization_replicas(&samples, current, percent)
                .map_err(|e| {
                    (
                        failed.to_string(),
                        format!("failed to get {resource} utilization: {e}"),
                    )
                })?;
            (
                replicas,
                json!({"averageUtilization": utilization, "averageValue": milli_string(average)}),
            )
        }
        ("AverageValue", _, Some(value)) => {
            let target_milli = Quantity::parse(&value.0)
                .map(|q| q.milli_ceil())
                .ok_or_else(|| {
                    (
                        failed.to_string(),
                        format!("invalid target value {:?}", value.0),
                    )
                })?;
            let (replicas, average) = average_value_replicas(&samples, current, target_milli)
                .map_err(|e| {
                    (
                        failed.to_string(),
                        format!("failed to get {resource} usage: {e}"),
                    )
                })?;
            (replicas, json!({"averageValue": milli_string(average)}))
        }
        _ => {
            return Err((
                failed.to_string(),
                format!(
                    "invalid target for {resource}: neither averageUtilization nor averageValue is set"
                ),
            ));
        }
    };
    let status = match &container {
        Some(c) => {
            json!({"type": "ContainerResource", "containerResource": {"name": resource, "container": c, "current": current_value}})
        }
        None => {
            json!({"type": "Resource", "resource": {"name": resource, "current": current_value}})
        }
    };
    let status = serde_json::from_value(status).map_err(|e| (failed.to_string(), e.to_string()))?;
    Ok((replicas, what, status))
}

fn milli_string(milli: i64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// Each selected pod's usage of the resource (millis) from the resource metrics API.
async fn pod_metrics(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    resource: &str,
    container: Option<&str>,
) -> Result<HashMap<String, i64>, String> {
    let ar = ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => {
                "the server could not find the requested resource (get pods.metrics.k8s.io)"
                    .to_string()
            }
            // An APIService whose server is unavailable (client-go's words for a 503).
            kube::Error::Api(s) if s.code == 503 => {
                "the server is currently unable to handle the request (get pods.metrics.k8s.io)"
                    .to_string()
            }
            e => e.to_string(),
        })?;
    let mut usage = HashMap::new();
    for item in list.items {
        let containers = item
            .data
            .get("containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut total = 0;
        let mut found = false;
        for c in containers {
            if container.is_some_and(|name| c.get("name").and_then(Value::as_str) != Some(name)) {
                continue;
            }
            if let Some(q) = c
                .pointer(&format!("/usage/{resource}"))
                .and_then(Value::as_str)
                .and_then(Quantity::parse)
            {
                total += q.milli_ceil();
                found = true;
            }
        }
        if found {
            usage.insert(item.name_any(), total);
        }
    }
    if usage.is_empty() {
        return Err("no metrics returned from resource metrics API".into());
    }
    Ok(usage)
}

/// A pod as the replica calculator sees it.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    /// Its usage (millis), None when the metrics API had none for it.
    usage: Option<i64>,
    /// The sum of its (or its container's) requests of the resource, in millis.
    request: i64,
    /// Counted as ready (upstream's groupPods: cpu samples of pods still starting are not).
    ready: bool,
}

/// The pods that count (not being deleted, not failed), grouped as upstream's groupPods.
fn samples(
    pods: &[Pod],
    usage: &HashMap<String, i64>,
    resource: &str,
    container: Option<&str>,
) -> Result<Vec<Sample>, String> {
    let now = jiff::Timestamp::now();
    let mut out = Vec::new();
    for pod in pods {
        let status = pod.status.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() || status.phase.as_deref() == Some("Failed") {
            continue;
        }
        let name = pod.name_any();
        let mut request = 0;
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            if container.is_some_and(|n| n != c.name) {
                continue;
            }
            let Some(q) = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(|q| Quantity::parse(&q.0))
            else {
                return Err(format!(
                    "missing request for {resource} in container {} of Pod {name}",
                    c.name
                ));
            };
            request += q.milli_ceil();
        }
        // Pending pods count as unready; so do cpu samples of pods still starting that are
        // not Ready.
        let pending = status.phase.as_deref().is_none_or(|p| p == "Pending");
        let starting = status
            .start_time
            .as_ref()
            .is_none_or(|t| now.duration_since(t.0).as_secs() < CPU_INITIALIZATION);
        let not_ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .is_none_or(|c| c.status != "True");
        let unready = pending || (resource == "cpu" && starting && not_ready);
        out.push(Sample {
            usage: if pending {
                None
            } else {
                usage.get(&name).copied()
            },
            request,
            ready: !unready,
        });
    }
    Ok(out)
}

/// Upstream's GetResourceReplicas for a utilization target: (replicas, utilization %, average
/// usage in millis) of the ready pods with metrics, missing pods assumed at the target's edge
/// and unready ones at zero when they could tip the decision.
fn utilization_replicas(
    samples: &[Sample],
    current: i32,
    target: i32,
) -> Result<(i32, i32, i64), String> {
    let measured: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.ready && s.usage.is_some())
        .collect();
    if measured.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let ratio_of = |set: &[(i64, i64)]| -> Result<(f64, i32, i64), String> {
        let usage: i64 = set.iter().map(|(u, _)| u).sum();
        let requests: i64 = set.iter().map(|(_, r)| r).sum();
        if requests == 0 {
            return Err("no metrics returned matched known pods".into());
        }
        let utilization = (usage * 100 / requests) as i32;
        Ok((
            f64::from(utilization) / f64::from(target),
            utilization,
            usage / set.len() as i64,
        ))
    };
    let ready: Vec<(i64, i64)> = measured
        .iter()
        .map(|s| (s.usage.unwrap_or(0), s.request))
        .collect();
    let (ratio, utilization, average) = ratio_of(&ready)?;
    let unready: Vec<&Sample> = samples.iter().filter(|s| !s.ready).collect();
    let missing: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.ready && s.usage.is_none())
        .collect();
    let up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !up_with_unready && missing.is_empty() {
        if (1.0 - ratio).abs() <= TOLERANCE {
            return Ok((current, utilization, average));
        }
        return Ok((
            (ratio * ready.len() as f64).ceil() as i32,
            utilization,
            average,
        ));
    }
    let mut all = ready.clone();
    for m in &missing {
        if ratio < 1.0 {
            all.push((m.request * i64::from(target.max(100)) / 100, m.request));
        } else if ratio > 1.0 {
            all.push((0, m.request));
        }
    }
    if up_with_unready {
        all.extend(unready.iter().map(|s| (0, s.request)));
    }
    let (new_ratio, _, _) = ratio_of(&all)?;
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok((current, utilization, average));
    }
    let replicas = (new_ratio * all.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok((current, utilization, average));
    }
    Ok((replicas, utilization, average))
}

/// Upstream's GetRawResourceReplicas: an average usage target (millis per pod).
fn average_value_replicas(
    samples: &[Sample],
    current: i32,
    target: i64,
) -> Result<(i32, i64), String> {
    let measured: Vec<i64> = samples
        .iter()
        .filter(|s| s.ready)
        .filter_map(|s| s.usage)
        .collect();
    if measured.is_empty() || target <= 0 {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let usage: i64 = measured.iter().sum();
    let average = usage / measured.len() as i64;
    let ratio = usage as f64 / (target as f64 * measured.len() as f64);
    if (1.0 - ratio).abs() <= TOLERANCE {
        return Ok((current, average));
    }
    Ok(((usage as f64 / target as f64).ceil() as i32, average))
}

/// The recommendation stabilized and bounded: without `behavior`, scale-down follows the
/// highest recommendation of the last five minutes and scale-up at most doubles (at least
/// to 4); with it, each direction's stabilization window and policies apply (upstream's
/// normalizeDesiredReplicas and normalizeDesiredReplicasWithBehaviors). Sets AbleToScale and
/// ScalingLimited as upstream does.
fn normalize(
    status: &mut HorizontalPodAutoscalerStatus,
    history: &mut History,
    behavior: Option<&k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior>,
    current: i32,
    proposed: i32,
    min: i32,
    max: i32,
) -> i32 {
    let now = Instant::now();
    let up = behavior
        .and_then(|b| b.scale_up.clone())
        .unwrap_or_else(default_up);
    let down = behavior
        .and_then(|b| b.scale_down.clone())
        .unwrap_or_else(default_down);
    let window = |r: &HPAScalingRules, default: Duration| {
        r.stabilization_window_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(default)
    };
    let up_window = window(&up, Duration::ZERO);
    let down_window = window(&down, DOWNSCALE_WINDOW);
    let longest = up_window.max(down_window);
    history
        .recommendations
        .retain(|(t, _)| now.duration_since(*t) <= longest);
    history.recommendations.push_back((now, proposed));
    // Up: the lowest recommendation of the up window; down: the highest of the down window.
    let in_window = |w: Duration| {
        history
            .recommendations
            .iter()
            .filter(move |(t, _)| now.duration_since(*t) <= w)
            .map(|(_, r)| *r)
    };
    let up_bound = in_window(up_window).min().unwrap_or(proposed);
    let down_bound = in_window(down_window).max().unwrap_or(proposed);
    let stabilized = if proposed > current {
        up_bound.max(current).min(proposed)
    } else {
        down_bound.min(current).max(proposed)
    };
    if stabilized != proposed {
        set_condition(
            status,
            "AbleToScale",
            true,
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation".into(),
        );
    } else {
        set_condition(
            status,
            "AbleToScale",
            true,
            "ReadyForNewScale",
            "recommended size matches current size".into(),
        );
    }
    // The policies' limits from the rescales within their periods.
    history
        .changes
        .retain(|(t, _)| now.duration_since(*t) <= Duration::from_secs(1800));
    let changed_within = |period: i32, sign: i32| -> i32 {
        history
            .changes
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= Duration::from_secs(period.max(0) as u64))
            .map(|(_, c)| *c)
            .filter(|c| c.signum() == sign)
            .sum::<i32>()
            .abs()
    };
    let (mut desired, limited, limit_reason, limit_message) = if stabilized > current {
        let limit = match behavior {
            None => (current * 2).max(4),
            Some(_) => policy_limit(&up, current, 1, &changed_within),
        };
        if stabilized > limit {
            (
                limit,
                true,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (
                stabilized,
                false,
                "DesiredWithinRange",
                "the desired count is within the acceptable range",
            )
        }
    } else if stabilized < current && behavior.is_some() {
        let limit = policy_limit(&down, current, -1, &changed_within);
        if stabilized < limit {
            (
                limit,
                true,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            )
        } else {
            (
                stabilized,
                false,
                "DesiredWithinRange",
                "the desired count is within the acceptable range",
            )
        }
    } else {
        (
            stabilized,
            false,
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        )
    };
    let (mut limited, mut limit_reason, mut limit_message) = (limited, limit_reason, limit_message);
    if desired > max {
        desired = max;
        limited = true;
        limit_reason = "TooManyReplicas";
        limit_message = "the desired replica count is more than the maximum replica count";
    } else if desired < min {
        desired = min;
        limited = true;
        limit_reason = "TooFewReplicas";
        limit_message = "the desired replica count is less than the minimum replica count";
    }
    set_condition(
        status,
        "ScalingLimited",
        limited,
        limit_reason,
        limit_message.into(),
    );
    desired
}

/// The furthest a direction's policies let the replica count move from `current` now, given
/// what was already moved within each policy's period (`sign` 1 up, -1 down).
fn policy_limit(
    rules: &HPAScalingRules,
    current: i32,
    sign: i32,
    changed_within: &dyn Fn(i32, i32) -> i32,
) -> i32 {
    let select = rules.select_policy.as_deref().unwrap_or("Max");
    if select == "Disabled" {
        return current;
    }
    let limits = rules.policies.iter().flatten().map(|p| {
        // The count at the period's start, and the change a policy allows from it.
        let start = current - sign * changed_within(p.period_seconds, sign);
        let allowed = match p.type_.as_str() {
            "Percent" => {
                let v = f64::from(start) * f64::from(p.value) / 100.0;
                if sign > 0 {
                    v.ceil() as i32
                } else {
                    v.floor() as i32
                }
            }
            _ => p.value,
        };
        start + sign * allowed
    });
    let limit = if (select == "Max") == (sign > 0) {
        limits.max()
    } else {
        limits.min()
    };
    limit.unwrap_or(current)
}

fn default_up() -> HPAScalingRules {
    serde_json::from_value(json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]}))
    .unwrap_or_default()
}

fn default_down() -> HPAScalingRules {
    serde_json::from_value(json!({"selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(usage: i64, request: i64) -> Sample {
        Sample {
            usage: Some(usage),
            request,
            ready: true,
        }
    }

    // Cases after upstream's replica_calculator_test.go.
    #[test]
    fn utilization_follows_upstreams_replica_calculator() {
        // TestReplicaCalcScaleUp: 3 pods at 300m/500m/700m of 1 cpu, target 30% -> 5.
        let s = [ready(300, 1000), ready(500, 1000), ready(700, 1000)];
        assert_eq!(utilization_replicas(&s, 3, 30).unwrap(), (5, 50, 500));
        // TestReplicaCalcScaleDown: 5 pods at 100..500m of 1 cpu... target 50% -> 3.
        let s = [
            ready(100, 1000),
            ready(300, 1000),
            ready(500, 1000),
            ready(250, 1000),
            ready(250, 1000),
        ];
        assert_eq!(utilization_replicas(&s, 5, 50).unwrap().0, 3);
        // TestReplicaCalcTolerance: within 10% nothing changes.
        let s = [ready(1010, 1000), ready(1090, 1000), ready(1080, 1000)];
        assert_eq!(utilization_replicas(&s, 3, 100).unwrap().0, 3);
        // TestReplicaCalcScaleUpUnreadyLessScale: an unready pod counts as 0 on scale-up.
        let s = [
            Sample {
                usage: Some(400),
                request: 1000,
                ready: false,
            },
            ready(500, 1000),
            ready(700, 1000),
        ];
        assert_eq!(utilization_replicas(&s, 3, 30).unwrap(), (4, 60, 600));
        // A pod without metrics counts at 100% of its request on scale-down.
        let s = [
            ready(100, 1000),
            ready(100, 1000),
            ready(100, 1000),
            ready(100, 1000),
            Sample {
                usage: None,
                request: 1000,
                ready: true,
            },
        ];
        assert_eq!(utilization_replicas(&s, 5, 50).unwrap().0, 3);
        // No usable sample is an error.
        assert!(utilization_replicas(&[], 3, 50).is_err());
    }

    #[test]
    fn average_value_divides_usage_by_the_target() {
        let s = [ready(4000, 0), ready(6000, 0)];
        assert_eq!(average_value_replicas(&s, 2, 2000).unwrap(), (5, 5000));
        assert_eq!(average_value_replicas(&s, 2, 5000).unwrap().0, 2);
    }

    fn condition<'a>(
        status: &'a HorizontalPodAutoscalerStatus,
        type_: &str,
    ) -> &'a HorizontalPodAutoscalerCondition {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    #[test]
    fn recommendations_are_stabilized_and_bounded() {
        let mut status = HorizontalPodAutoscalerStatus::default();
        let mut h = History::default();
        // Without behavior: scale-up at most doubles (at least 4).
        assert_eq!(normalize(&mut status, &mut h, None, 2, 20, 1, 50), 4);
        let limited = condition(&status, "ScalingLimited");
        assert_eq!(
            (limited.status.as_str(), limited.reason.as_deref()),
            ("True", Some("ScaleUpLimit"))
        );
        // A scale-down right after a higher recommendation is held at it (the window).
        let mut h = History::default();
        assert_eq!(normalize(&mut status, &mut h, None, 6, 6, 1, 50), 6);
        assert_eq!(normalize(&mut status, &mut h, None, 6, 3, 1, 50), 6);
        let able = condition(&status, "AbleToScale");
        assert_eq!(able.reason.as_deref(), Some("ScaleDownStabilized"));
        // The bounds have the last word.
        let mut h = History::default();
        assert_eq!(normalize(&mut status, &mut h, None, 3, 5, 1, 4), 4);
        let limited = condition(&status, "ScalingLimited");
        assert_eq!(limited.reason.as_deref(), Some("TooManyReplicas"));
        // With behavior: a scale-down without a window, limited to one pod per minute.
        let behavior =
            serde_json::from_value(json!({"scaleDown": {"stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}))
            .unwrap();
        let mut h = History::default();
        assert_eq!(
            normalize(&mut status, &mut h, Some(&behavior), 6, 2, 1, 10),
            5
        );
        h.changes.push_back((Instant::now(), -1));
        assert_eq!(
            normalize(&mut status, &mut h, Some(&behavior), 5, 2, 1, 10),
            5
        );
    }
}
