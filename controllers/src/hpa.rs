//! The horizontal pod autoscaler controller (upstream's podautoscaler.HorizontalController):
//! every 15 seconds each HorizontalPodAutoscaler reads its target's scale subresource, keeps
//! the replica count within minReplicas..maxReplicas, and between them follows its metrics.
//! Resource metrics (cpu, memory; per pod or per container) come from the resource metrics
//! API (`metrics.k8s.io`); Pods and Object metrics from the custom metrics API
//! (`custom.metrics.k8s.io`, its preferred of v1beta2 and v1beta1), External ones from the
//! external metrics API (`external.metrics.k8s.io`), all as upstream's replica calculator
//! reads them. Extension servers behind the aggregator serve these APIs; a cluster that serves
//! none (Kelp serves none of its own) gets upstream's answer: the ScalingActive condition
//! False with FailedGetResourceMetric (or FailedGetPodsMetric, ...), and the bounds still
//! enforced. Recommendations are
//! stabilized (scale-down over five minutes by default) and bounded by the scaling policies
//! of `spec.behavior` (upstream's defaults without one). Status (current and desired
//! replicas, current metrics, lastScaleTime), the AbleToScale / ScalingActive /
//! ScalingLimited conditions and the SuccessfulRescale events are upstream's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{
    ExternalMetricSource, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus,
    MetricTarget, ObjectMetricSource, PodsMetricSource,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
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
    hpas: kube::runtime::reflector::Store<HorizontalPodAutoscaler>,
    events: Recorder,
    /// Scale targets' resources by `apiVersion/kind`.
    kinds: Mutex<HashMap<String, ApiResource>>,
    /// Per autoscaler: recent recommendations (for stabilization) and rescales (for the
    /// scaling policies' periods).
    history: Mutex<HashMap<String, History>>,
}

#[derive(Default)]
struct History {
    /// When the autoscaler was last looked at.
    looked: Option<Instant>,
    recommendations: VecDeque<(Instant, i32)>,
    /// (when, replicas added — negative when removed)
    changes: VecDeque<(Instant, i32)>,
}

pub async fn run(client: kube::Client, informers: Arc<Informers>) -> anyhow::Result<()> {
    let controller = Controller::for_stream(informers.hpas.changes(), informers.hpas.store());
    let events = Recorder::spawn(client.clone(), "horizontal-pod-autoscaler", String::new());
    let ctx = Arc::new(Ctx {
        hpas: informers.hpas.store(),
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
    // By uid: an autoscaler deleted and made again under its name starts afresh.
    let key = hpa.metadata.uid.clone().unwrap_or_default();
    // Once per sync period, whatever changed meanwhile (its own status writes, the target's
    // scale): upstream's queue adds every autoscaler with the period as its delay. A new one
    // is looked at once at once.
    {
        let mut history = ctx.history();
        // What deleted autoscalers left goes.
        if history.len() > ctx.hpas.state().len() {
            let live: std::collections::HashSet<String> = ctx
                .hpas
                .state()
                .iter()
                .filter_map(|h| h.metadata.uid.clone())
                .collect();
            history.retain(|uid, _| live.contains(uid));
        }
        let h = history.entry(key.clone()).or_default();
        if let Some(wait) = h
            .looked
            .map(|t| SYNC_PERIOD.saturating_sub(t.elapsed()))
            .filter(|w| !w.is_zero())
        {
            return Ok(Action::requeue(wait));
        }
        h.looked = Some(Instant::now());
    }
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
        let scope = Scope {
            ctx: &ctx,
            ns: &ns,
            selector: selector.as_deref(),
            spec_replicas: current,
            status_replicas: scale.status.as_ref().map(|s| s.replicas).unwrap_or(0),
        };
        match replicas_for_metrics(&scope, &spec.metrics.clone().unwrap_or_default()).await {
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

/// What a metric is read for: the autoscaler's namespace, its target's pod selector and the
/// target's replicas (spec, and as its status counts them).
struct Scope<'a> {
    ctx: &'a Ctx,
    ns: &'a str,
    selector: Option<&'a str>,
    spec_replicas: i32,
    status_replicas: i32,
}

/// The largest recommendation of the metrics that could be read (upstream's
/// computeReplicasForMetrics); a failure when none could.
async fn replicas_for_metrics(scope: &Scope<'_>, metrics: &[MetricSpec]) -> Result<Found, Failure> {
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
        match replicas_for_metric(scope, m).await {
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
type Recommendation = Result<(i32, String, MetricStatus), (String, String)>;

/// One metric's recommendation, by its source type (upstream's computeReplicasForMetric).
async fn replicas_for_metric(scope: &Scope<'_>, metric: &MetricSpec) -> Recommendation {
    let missing = |what: &str| {
        Err((
            "InvalidMetricSourceType".to_string(),
            format!("{what} metric without its source"),
        ))
    };
    match metric.type_.as_str() {
        "Resource" => match &metric.resource {
            Some(r) => resource_replicas(scope, &r.name, None, &r.target).await,
            None => missing("resource"),
        },
        "ContainerResource" => match &metric.container_resource {
            Some(r) => resource_replicas(scope, &r.name, Some(&r.container), &r.target).await,
            None => missing("container resource"),
        },
        "Pods" => match &metric.pods {
            Some(p) => pods_replicas(scope, p).await,
            None => missing("pods"),
        },
        "Object" => match &metric.object {
            Some(o) => object_replicas(scope, o).await,
            None => missing("object"),
        },
        "External" => match &metric.external {
            Some(e) => external_replicas(scope, e).await,
            None => missing("external"),
        },
        other => Err((
            "InvalidMetricSourceType".into(),
            format!("unknown metric source type {other:?}"),
        )),
    }
}

/// A resource metric (cpu, memory) of the target's pods, or of one container of theirs, from
/// the resource metrics API (upstream's computeStatusForResourceMetric and
/// computeStatusForContainerResourceMetric).
async fn resource_replicas(
    scope: &Scope<'_>,
    resource: &str,
    container: Option<&str>,
    target: &MetricTarget,
) -> Recommendation {
    let (client, ns, selector, current) = (
        &scope.ctx.client,
        scope.ns,
        scope.selector,
        scope.spec_replicas,
    );
    let failed = if container.is_some() {
        "FailedGetContainerResourceMetric"
    } else {
        "FailedGetResourceMetric"
    };
    let Some(selector) = selector else {
        return Err(("InvalidSelector".into(), "selector is required".into()));
    };
    let usage = pod_metrics(client, ns, selector, resource, container)
        .await
        .map_err(|e| {
            (
                failed.to_string(),
                format!("failed to get {resource} utilization: unable to get metrics for resource {resource}: unable to fetch metrics from resource metrics API: {e}"),
            )
        })?;
    let pods = selected_pods(client, ns, selector)
        .await
        .map_err(|e| (failed.to_string(), e))?;
    let requests = target.type_ == "Utilization";
    let samples = samples(&pods, &usage, resource, container, requests).map_err(|e| {
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
            let (replicas, average) =
                plain_replicas(&samples, current, target_milli).map_err(|e| {
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

/// Thousandths as upstream prints a NewMilliQuantity(milli, DecimalSI): `200m`, `15`, `5k`.
fn milli_string(milli: i64) -> String {
    Quantity::milli(milli).to_string()
}

/// The pods the target's selector selects.
async fn selected_pods(
    client: &kube::Client,
    ns: &str,
    selector: &str,
) -> Result<Vec<Pod>, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| format!("unable to get pods while calculating replica count: {e}"))?
        .items;
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    Ok(pods)
}

/// A per-pod custom metric of the target's pods (upstream's computeStatusForPodsMetric): its
/// average against the target's averageValue, as for a raw resource.
async fn pods_replicas(scope: &Scope<'_>, source: &PodsMetricSource) -> Recommendation {
    const FAILED: &str = "FailedGetPodsMetric";
    let name = &source.metric.name;
    let fail = |e: String| (FAILED.to_string(), e);
    let Some(selector) = scope.selector else {
        return Err(("InvalidSelector".into(), "selector is required".into()));
    };
    let Some(target) = source
        .target
        .average_value
        .as_ref()
        .and_then(|q| Quantity::parse(&q.0))
    else {
        return Err(fail(format!(
            "invalid pods metric source: the target of {name} has no averageValue"
        )));
    };
    let usage = custom_metrics(
        &scope.ctx.client,
        scope.ns,
        "pods",
        "*",
        name,
        Some(selector),
        source.metric.selector.as_ref(),
    )
    .await
    .map_err(|e| fail(format!("unable to get metric {name}: {e}")))?;
    if usage.is_empty() {
        return Err(fail(format!(
            "unable to get metric {name}: no metrics returned from custom metrics API"
        )));
    }
    let pods = selected_pods(&scope.ctx.client, scope.ns, selector)
        .await
        .map_err(|e| fail(format!("unable to get metric {name}: {e}")))?;
    let samples = samples(&pods, &usage, "", None, false).map_err(fail)?;
    let (replicas, average) = plain_replicas(&samples, scope.spec_replicas, target.milli_ceil())
        .map_err(|e| fail(format!("unable to get metric {name}: {e}")))?;
    let status = json!({"type": "Pods", "pods": {
        "metric": &source.metric,
        "current": {"averageValue": milli_string(average)},
    }});
    let status = serde_json::from_value(status).map_err(|e| fail(e.to_string()))?;
    Ok((replicas, format!("pods metric {name}"), status))
}

/// A metric of one object of the autoscaler's namespace (upstream's
/// computeStatusForObjectMetric): a value target scales the ready pods by the ratio; an
/// averageValue target divides the value among the replicas.
async fn object_replicas(scope: &Scope<'_>, source: &ObjectMetricSource) -> Recommendation {
    const FAILED: &str = "FailedGetObjectMetric";
    let name = &source.metric.name;
    let object = &source.described_object;
    let fail = |e: String| {
        (
            FAILED.to_string(),
            format!(
                "unable to get metric {name}: {e} on {} {}/{}",
                object.kind, scope.ns, object.name
            ),
        )
    };
    let api_version = object.api_version.clone().unwrap_or_else(|| "v1".into());
    // A namespace's metrics are the namespace's own (upstream never lets the reference leave
    // the autoscaler's namespace).
    let (resource, object_name) = if object.kind == "Namespace" && api_version == "v1" {
        ("metrics".to_string(), scope.ns.to_string())
    } else {
        let ar = scope
            .ctx
            .resource(&api_version, &object.kind)
            .await
            .map_err(|e| {
                fail(format!(
                    "unable to fetch metrics from custom metrics API: {e}"
                ))
            })?;
        let resource = if ar.group.is_empty() {
            ar.plural
        } else {
            format!("{}.{}", ar.plural, ar.group)
        };
        (resource, object.name.clone())
    };
    let values = custom_metrics(
        &scope.ctx.client,
        scope.ns,
        &resource,
        &object_name,
        name,
        None,
        source.metric.selector.as_ref(),
    )
    .await
    .map_err(fail)?;
    if values.len() != 1 {
        return Err(fail(format!(
            "unable to fetch metrics from custom metrics API: the custom metrics API server returned {} results when we asked for exactly one",
            values.len()
        )));
    }
    let usage = values.into_values().sum::<i64>();
    let what = format!("{} metric {name}", object.kind);
    let target = &source.target;
    let quantity = |q: &Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.as_ref()
            .and_then(|q| Quantity::parse(&q.0))
            .map(|q| q.milli_ceil())
    };
    let (replicas, current) = match (
        target.type_.as_str(),
        quantity(&target.value),
        quantity(&target.average_value),
    ) {
        ("Value", Some(value), _) => {
            let replicas = usage_ratio_replicas(scope, usage as f64 / value as f64)
                .await
                .map_err(|e| (FAILED.to_string(), e))?;
            (replicas, json!({"value": milli_string(usage)}))
        }
        ("AverageValue", _, Some(average)) => {
            let (replicas, per_pod) = per_pod_replicas(scope.status_replicas, usage, average);
            (replicas, json!({"averageValue": milli_string(per_pod)}))
        }
        _ => {
            return Err((
                FAILED.to_string(),
                "invalid object metric source: neither a value target nor an average value target was set".into(),
            ));
        }
    };
    let status = json!({"type": "Object", "object": {
        "describedObject": object,
        "metric": &source.metric,
        "current": current,
    }});
    let status = serde_json::from_value(status).map_err(|e| (FAILED.to_string(), e.to_string()))?;
    Ok((replicas, what, status))
}

/// A metric from outside the cluster (upstream's computeStatusForExternalMetric): the sum of
/// the series the metric selector picks, against a value or a per-replica averageValue.
async fn external_replicas(scope: &Scope<'_>, source: &ExternalMetricSource) -> Recommendation {
    const FAILED: &str = "FailedGetExternalMetric";
    let name = &source.metric.name;
    let shown = go_selector(source.metric.selector.as_ref());
    let fail = |e: String| {
        (
            FAILED.to_string(),
            format!(
                "unable to get external metric {}/{name}/{shown}: {e}",
                scope.ns
            ),
        )
    };
    let what = format!("external metric {name}({shown})");
    let target = &source.target;
    let quantity = |q: &Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.as_ref()
            .and_then(|q| Quantity::parse(&q.0))
            .map(|q| q.milli_ceil())
    };
    let (average, value) = (quantity(&target.average_value), quantity(&target.value));
    if average.is_none() && value.is_none() {
        return Err((
            FAILED.to_string(),
            "invalid external metric source: neither a value target nor an average value target was set".into(),
        ));
    }
    let usage: i64 = external_metrics(
        &scope.ctx.client,
        scope.ns,
        name,
        source.metric.selector.as_ref(),
    )
    .await
    .map_err(fail)?
    .iter()
    .sum();
    let (replicas, current) = match (average, value) {
        (Some(average), _) => {
            let (replicas, per_pod) = per_pod_replicas(scope.status_replicas, usage, average);
            (replicas, json!({"averageValue": milli_string(per_pod)}))
        }
        (None, Some(value)) => {
            let replicas = usage_ratio_replicas(scope, usage as f64 / value as f64)
                .await
                .map_err(|e| (FAILED.to_string(), e))?;
            (replicas, json!({"value": milli_string(usage)}))
        }
        (None, None) => unreachable!("checked above"),
    };
    let status = json!({"type": "External", "external": {
        "metric": &source.metric,
        "current": current,
    }});
    let status = serde_json::from_value(status).map_err(|e| (FAILED.to_string(), e.to_string()))?;
    Ok((replicas, what, status))
}

/// Upstream's getUsageRatioReplicaCount: the ready pods scaled by the ratio (nothing changes
/// within the tolerance); from zero replicas, the ratio itself.
async fn usage_ratio_replicas(scope: &Scope<'_>, ratio: f64) -> Result<i32, String> {
    let current = scope.spec_replicas;
    if current == 0 {
        return Ok(ratio.ceil() as i32);
    }
    if (1.0 - ratio).abs() <= TOLERANCE {
        return Ok(current);
    }
    let Some(selector) = scope.selector else {
        return Err("selector is required".into());
    };
    let pods = selected_pods(&scope.ctx.client, scope.ns, selector)
        .await
        .map_err(|e| format!("unable to calculate ready pods: {e}"))?;
    let ready = pods
        .iter()
        .filter(|p| {
            let status = p.status.as_ref();
            status.and_then(|s| s.phase.as_deref()) == Some("Running")
                && status
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .count();
    Ok((ratio * ready as f64).ceil() as i32)
}

/// Upstream's per-pod recommendation for an averageValue target of an object or external
/// metric: (replicas, the usage per replica). The replicas stay within the tolerance.
fn per_pod_replicas(status_replicas: i32, usage: i64, average: i64) -> (i32, i64) {
    let average = average.max(1) as f64;
    let replicas = f64::from(status_replicas);
    let ratio = usage as f64 / (average * replicas);
    let recommended = if (1.0 - ratio).abs() > TOLERANCE {
        (usage as f64 / average).ceil() as i32
    } else {
        status_replicas
    };
    let per_pod = if status_replicas > 0 {
        (usage as f64 / replicas).ceil() as i64
    } else {
        usage
    };
    (recommended, per_pod)
}

/// A label selector in upstream's text form (`app=web,tier in (a,b)`), as a query sends it.
fn selector_string(selector: &LabelSelector) -> String {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default().join(",");
        terms.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    terms.join(",")
}

/// A label selector as Go's `%+v` prints upstream's generated type, which the autoscaler's
/// messages about external metrics show: `nil`, or
/// `&LabelSelector{MatchLabels:map[string]string{queue: jobs,},MatchExpressions:[]LabelSelectorRequirement{},}`.
fn go_selector(selector: Option<&LabelSelector>) -> String {
    let Some(selector) = selector else {
        return "nil".into();
    };
    let labels: String = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}: {v},"))
        .collect();
    let expressions: String = selector
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            format!(
                "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
                e.key,
                e.operator,
                e.values.as_deref().unwrap_or_default().join(" ")
            )
        })
        .collect();
    format!(
        "&LabelSelector{{MatchLabels:map[string]string{{{labels}}},MatchExpressions:[]LabelSelectorRequirement{{{expressions}}},}}"
    )
}

/// A failed request to a metrics API in client-go's words: its generic message naming the
/// request for a bare 404 (an API not served) or 503 (an extension server unavailable), the
/// server's message otherwise.
fn metrics_api_error(e: kube::Error, request: &str) -> String {
    match e {
        kube::Error::Api(s) if s.code == 404 => {
            format!("the server could not find the requested resource ({request})")
        }
        kube::Error::Api(s) if s.code == 503 => {
            format!("the server is currently unable to handle the request ({request})")
        }
        kube::Error::Api(s) => s.message,
        e => e.to_string(),
    }
}

/// GETs a metrics API path (with its query) as JSON.
async fn get_json(client: &kube::Client, path: &str, request: &str) -> Result<Value, String> {
    let req = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client
        .request::<Value>(req)
        .await
        .map_err(|e| metrics_api_error(e, request))
}

/// The custom metrics API's version to use: its preferred one of those the autoscaler reads
/// (upstream's discovery-based custom metrics client).
async fn custom_metrics_version(client: &kube::Client) -> Result<String, String> {
    const GROUP: &str = "custom.metrics.k8s.io";
    let unregistered = || format!("no custom metrics API ({GROUP}) registered");
    let group = get_json(client, &format!("/apis/{GROUP}"), GROUP)
        .await
        .map_err(|_| unregistered())?;
    let preferred = group
        .pointer("/preferredVersion/version")
        .and_then(Value::as_str);
    let served: Vec<&str> = group
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("version").and_then(Value::as_str))
        .collect();
    preferred
        .into_iter()
        .chain(served)
        .find(|v| matches!(*v, "v1beta2" | "v1beta1"))
        .map(str::to_string)
        .ok_or_else(unregistered)
}

/// A query string of the non-empty parameters.
fn query(params: &[(&str, Option<String>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            q.append_pair(k, v);
        }
    }
    let q = q.finish();
    if q.is_empty() { q } else { format!("?{q}") }
}

/// The values (millis) of a custom metric by the name of the object each describes: of
/// `resource/name` (`*` with a label selector: of every selected object) in the namespace.
async fn custom_metrics(
    client: &kube::Client,
    ns: &str,
    resource: &str,
    name: &str,
    metric: &str,
    selector: Option<&str>,
    metric_selector: Option<&LabelSelector>,
) -> Result<HashMap<String, i64>, String> {
    let api = "unable to fetch metrics from custom metrics API";
    let version = custom_metrics_version(client)
        .await
        .map_err(|e| format!("{api}: {e}"))?;
    let path = if resource == "metrics" {
        format!("/apis/custom.metrics.k8s.io/{version}/namespaces/{ns}/metrics/{metric}")
    } else {
        format!("/apis/custom.metrics.k8s.io/{version}/namespaces/{ns}/{resource}/{name}/{metric}")
    };
    let path = path
        + &query(&[
            ("labelSelector", selector.map(str::to_string)),
            ("metricLabelSelector", metric_selector.map(selector_string)),
        ]);
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    let group = if group.is_empty() {
        "custom.metrics.k8s.io".to_string()
    } else {
        format!("{group}.custom.metrics.k8s.io")
    };
    let request = format!("get {plural}.{group} {name}");
    let list = get_json(client, &path, &request)
        .await
        .map_err(|e| format!("{api}: {e}"))?;
    let mut values = HashMap::new();
    for item in list
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let object = item
            .pointer("/describedObject/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let value = item
            .get("value")
            .and_then(Value::as_str)
            .and_then(Quantity::parse)
            .ok_or_else(|| format!("{api}: a value of {metric} is not a quantity"))?;
        values.insert(object.to_string(), value.milli_ceil());
    }
    Ok(values)
}

/// The values (millis) of an external metric's series that the selector picks.
async fn external_metrics(
    client: &kube::Client,
    ns: &str,
    metric: &str,
    selector: Option<&LabelSelector>,
) -> Result<Vec<i64>, String> {
    let api = "unable to fetch metrics from external metrics API";
    let path = format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}")
        + &query(&[("labelSelector", selector.map(selector_string))]);
    let request = format!("get {metric}.external.metrics.k8s.io");
    let list = get_json(client, &path, &request)
        .await
        .map_err(|e| format!("{api}: {e}"))?;
    let values: Vec<i64> = list
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|item| {
            item.get("value")
                .and_then(Value::as_str)
                .and_then(Quantity::parse)
                .map(|q| q.milli_ceil())
                .ok_or_else(|| format!("{api}: a value of {metric} is not a quantity"))
        })
        .collect::<Result<_, _>>()?;
    if values.is_empty() {
        return Err("no metrics returned from external metrics API".into());
    }
    Ok(values)
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
        .map_err(|e| metrics_api_error(e, "get pods.metrics.k8s.io"))?;
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

/// The pods that count (not being deleted, not failed), grouped as upstream's groupPods; with
/// `requests`, each pod's request of the resource, which must be set (utilization targets).
fn samples(
    pods: &[Pod],
    usage: &HashMap<String, i64>,
    resource: &str,
    container: Option<&str>,
    requests: bool,
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
            if !requests || container.is_some_and(|n| n != c.name) {
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
        // A pod without a sample is missing, whatever its readiness (upstream's order).
        let sample = usage.get(&name).copied();
        let unready = pending || (resource == "cpu" && sample.is_some() && starting && not_ready);
        out.push(Sample {
            usage: if pending { None } else { sample },
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

/// Upstream's calcPlainMetricReplicas, for an average value target (millis per pod) of a
/// resource or a per-pod custom metric: (replicas, average usage of the measured pods). Pods
/// without a sample count at the target on a scale-down and at zero on a scale-up, unready
/// ones at zero on a scale-up, and a change of direction they would cause is no change.
fn plain_replicas(samples: &[Sample], current: i32, target: i64) -> Result<(i32, i64), String> {
    let target = target.max(1);
    let measured: Vec<i64> = samples
        .iter()
        .filter(|s| s.ready)
        .filter_map(|s| s.usage)
        .collect();
    if measured.is_empty() {
        return Err("did not receive metrics for any ready pods".into());
    }
    let ratio_of = |values: &[i64]| {
        let average = values.iter().sum::<i64>() / values.len() as i64;
        (average as f64 / target as f64, average)
    };
    let (ratio, average) = ratio_of(&measured);
    let unready = samples.iter().filter(|s| !s.ready).count();
    let missing = samples
        .iter()
        .filter(|s| s.ready && s.usage.is_none())
        .count();
    let up_with_unready = unready > 0 && ratio > 1.0;
    if !up_with_unready && missing == 0 {
        if (1.0 - ratio).abs() <= TOLERANCE {
            return Ok((current, average));
        }
        return Ok(((ratio * measured.len() as f64).ceil() as i32, average));
    }
    let mut all = measured.clone();
    let assumed = if ratio < 1.0 { target } else { 0 };
    all.extend(std::iter::repeat_n(assumed, missing));
    if up_with_unready {
        all.extend(std::iter::repeat_n(0, unready));
    }
    let (new_ratio, _) = ratio_of(&all);
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok((current, average));
    }
    Ok(((new_ratio * all.len() as f64).ceil() as i32, average))
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

    // Cases after upstream's replica_calculator_test.go for plain metrics.
    #[test]
    fn plain_metrics_follow_upstreams_replica_calculator() {
        let s = [ready(4000, 0), ready(6000, 0)];
        assert_eq!(plain_replicas(&s, 2, 2000).unwrap(), (5, 5000));
        assert_eq!(plain_replicas(&s, 2, 5000).unwrap().0, 2);
        // TestReplicaCalcScaleUpCM: 3 pods at 20k/10k/30k milli, target 15k -> 4.
        let s = [ready(20000, 0), ready(10000, 0), ready(30000, 0)];
        assert_eq!(plain_replicas(&s, 3, 15000).unwrap(), (4, 20000));
        // TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale: an unready pod counts as 0 on a
        // scale-up: 50k + 10k + 0 over 3 against 15k -> 4.
        let s = [
            ready(50000, 0),
            ready(10000, 0),
            Sample {
                usage: None,
                request: 0,
                ready: false,
            },
        ];
        assert_eq!(plain_replicas(&s, 3, 15000).unwrap().0, 4);
        // A missing pod counts at the target on a scale-down: (5k + 5k + 10k) / 3 against
        // 10k is within... 6.67k -> ratio 0.67, 3 pods -> 2.
        let missing = Sample {
            usage: None,
            request: 0,
            ready: true,
        };
        let s = [ready(5000, 0), ready(5000, 0), missing.clone()];
        assert_eq!(plain_replicas(&s, 3, 10000).unwrap().0, 2);
        // ... and one that would turn a scale-up into a scale-down changes nothing.
        let s = [ready(12000, 0), missing.clone(), missing];
        assert_eq!(plain_replicas(&s, 3, 10000).unwrap().0, 3);
        assert!(plain_replicas(&[], 3, 10).is_err());
    }

    #[test]
    fn per_pod_targets_divide_the_value_among_the_replicas() {
        // GetExternalPerPodMetricReplicas: 8600m over 2 replicas against 2150m each -> 4.
        assert_eq!(per_pod_replicas(2, 8600, 2150), (4, 4300));
        // Within the tolerance the replicas stay.
        assert_eq!(per_pod_replicas(4, 8600, 2150), (4, 2150));
    }

    #[test]
    fn selectors_print_as_upstream_does() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"queue": "jobs"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}],
        }))
        .unwrap();
        assert_eq!(selector_string(&sel), "queue=jobs,tier in (a,b)");
        assert_eq!(
            go_selector(Some(&sel)),
            "&LabelSelector{MatchLabels:map[string]string{queue: jobs,},MatchExpressions:[]LabelSelectorRequirement{LabelSelectorRequirement{Key:tier,Operator:In,Values:[a b],},},}"
        );
        assert_eq!(go_selector(None), "nil");
        assert_eq!(milli_string(200), "200m");
        assert_eq!(milli_string(15000), "15");
        assert_eq!(milli_string(5_000_000), "5k");
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
