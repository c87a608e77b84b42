//! [sig-node] tests of what a kubelet reports of containers not (or not yet) fit to serve and of
//! pods it must stop: readiness probes (test/e2e/common/node/container_probe.go), an active
//! deadline lowered on a running pod (pods.go) and init containers that fail
//! (init_container.go).
//!
//! Their pods run on `kelp simulate` nodes, which run no container and no probe but report
//! these as upstream's kubelet does (see kubelet/src/simulate.rs): a readiness probe holds a
//! container's readiness for its initial delay, or forever when it probes a port the container
//! does not declare; a pod past its deadline fails, DeadlineExceeded; an init container running
//! /bin/false fails, and is restarted unless the pod never restarts.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use super::node_more::{
    POLL, container_statuses, init_container_statuses, init_pod, pod_completed, until_pod,
};
use super::pods::{
    AGNHOST, BUSYBOX, PAUSE, POD_START, create_sync, nanos, phase, restricted, update_pod, uuid,
    wait_running_ready,
};
use super::tests;
use crate::framework::{eventually_every, from, is_ready};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    let mut list = tests![
        "[sig-node] Probing container with readiness probe should not be ready before initial delay and never restart [NodeConformance]" => readiness_after_initial_delay,
        "[sig-node] Probing container with readiness probe that fails should never be ready and never restart [NodeConformance]" => readiness_probe_fails,
        "[sig-node] Pods should allow activeDeadlineSeconds to be updated [NodeConformance]" => active_deadline_updated,
        "[sig-node] InitContainer [NodeConformance] should not start app containers if init containers fail on a RestartAlways pod" => init_fails_restart_always,
        "[sig-node] InitContainer [NodeConformance] should not start app containers and fail the pod if init containers fail on a RestartNever pod" => init_fails_restart_never,
    ];
    // The probe tests spend their time on the clock (an initial delay; a minute of watching a
    // pod stay unready), in their own namespaces: they run beside the other tests.
    for test in &mut list {
        test.clocked = test.name.contains("Probing container");
    }
    list
}

// ---------------------------------------------------------------------------------------------
// Pod helpers
// ---------------------------------------------------------------------------------------------

/// podutil.GetPodCondition: the pod's condition of `type_`, when it has one.
fn pod_condition(p: &Pod, type_: &str) -> Option<PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// testutils.PodRunningReady: Running, with its Ready condition True; the error says which not.
fn pod_running_ready(p: &Pod) -> anyhow::Result<()> {
    let name = p.name_any();
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    ensure!(
        phase(p) == "Running",
        "want pod '{name}' on '{node}' to be 'Running' but was '{}'",
        phase(p)
    );
    ensure!(
        is_ready(p),
        "pod '{name}' on '{node}' didn't have condition {{Ready True}}; conditions: {:?}",
        p.status.as_ref().and_then(|s| s.conditions.as_ref())
    );
    Ok(())
}

/// toDebugJSON: the object as JSON, for a failure message.
fn debug_json(status: &ContainerStatus) -> String {
    serde_json::to_string(status).unwrap_or_else(|e| format!("<error: {e}>"))
}

/// The reason a container waits for, or None when it is not waiting.
fn waiting_reason(status: &ContainerStatus) -> Option<&str> {
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    Some(waiting.reason.as_deref().unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/common/node/container_probe.go
// ---------------------------------------------------------------------------------------------

/// probeTestInitialDelaySeconds.
const PROBE_TEST_INITIAL_DELAY_SECONDS: i64 = 15;

/// How long "with readiness probe that fails" watches the pod stay unready, and how often:
/// upstream's gomega.Consistently of a minute, every second, kept whole (it fits the harness's
/// three minutes, and the test runs beside the others).
const NEVER_READY_WINDOW: Duration = Duration::from_secs(60);
const NEVER_READY_POLL: Duration = Duration::from_secs(1);

/// webserverProbeBuilder's probe: an HTTP GET of / on port 80; withInitialDelay waits
/// probeTestInitialDelaySeconds first, withFailing probes port 81, which the container does not
/// serve.
fn webserver_probe(initial_delay: bool, failing: bool) -> Value {
    let port = if failing { 81 } else { 80 };
    let mut probe = json!({"httpGet": {"path": "/", "port": port}});
    if initial_delay {
        probe["initialDelaySeconds"] = json!(PROBE_TEST_INITIAL_DELAY_SECONDS);
    }
    probe
}

/// testWebServerPodSpec(readinessProbe, nil, containerName, 80): agnhost's test-webserver,
/// serving port 80.
fn test_webserver_pod(readiness_probe: Value, container: &str) -> Value {
    json!({
        "metadata": {"name": format!("test-webserver-{}", uuid())},
        "spec": {"containers": [{
            "name": container,
            "image": AGNHOST,
            "args": ["test-webserver"],
            "ports": [{"containerPort": 80}],
            "readinessProbe": readiness_probe,
        }]},
    })
}

/// GetContainerStartedTime: when the container (init or app) named `container` started.
fn container_started_time(p: &Pod, container: &str) -> anyhow::Result<Timestamp> {
    let status = init_container_statuses(p)
        .into_iter()
        .chain(container_statuses(p))
        .find(|s| s.name == container)
        .with_context(|| format!("cannot find container named {container:?}"))?;
    let running = status.state.and_then(|s| s.running);
    let Some(running) = running else {
        bail!("container is not running");
    };
    running
        .started_at
        .map(|t| t.0)
        .context("the running container has no startedAt")
}

/// GetTransitionTimeForReadyCondition: when the pod's Ready condition last changed.
fn transition_time_for_ready_condition(p: &Pod) -> anyhow::Result<Timestamp> {
    pod_condition(p, "Ready")
        .context("no ready condition can be found for pod")?
        .last_transition_time
        .map(|t| t.0)
        .context("the Ready condition has no lastTransitionTime")
}

/// getRestartCount: the restarts of all the pod's containers, init containers included.
fn restart_count(p: &Pod) -> i32 {
    init_container_statuses(p)
        .into_iter()
        .chain(container_statuses(p))
        .map(|s| s.restart_count)
        .sum()
}

/// "with readiness probe should not be ready before initial delay and never restart".
/// framework.PodStartTimeout (5m) is cut to [`POD_START`].
async fn readiness_after_initial_delay(ctx: Ctx) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    let ns = &ctx.namespace;
    let container = "test-webserver";
    let pod: Pod = from(test_webserver_pod(webserver_probe(true, false), container))?;
    let created = pods
        .create(&PostParams::default(), &pod)
        .await
        .context("creating the pod")?;
    let name = created.name_any();
    wait_running_ready(&pods, &name).await?;

    let p = pods.get(&name).await?;
    pod_running_ready(&p).with_context(|| format!("pod {ns}/{name} should be ready"))?;

    // We assume the pod became ready when the container became ready. This is true for a
    // single container pod.
    let ready_time = transition_time_for_ready_condition(&p)?;
    let started_time = container_started_time(&p, container)?;
    let initial_delay = SignedDuration::from_secs(PROBE_TEST_INITIAL_DELAY_SECONDS);
    ensure!(
        ready_time.duration_since(started_time) >= initial_delay,
        "Pod became ready before it's {initial_delay:?} initial delay (container started at \
         {started_time}, pod became ready at {ready_time})"
    );

    let restarts = restart_count(&p);
    ensure!(
        restarts == 0,
        "pod should have a restart count of 0 but got {restarts}"
    );
    Ok(())
}

/// "with readiness probe that fails should never be ready and never restart".
async fn readiness_probe_fails(ctx: Ctx) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    let ns = &ctx.namespace;
    let pod: Pod = from(test_webserver_pod(
        webserver_probe(false, true),
        "test-webserver",
    ))?;
    let created = pods
        .create(&PostParams::default(), &pod)
        .await
        .context("creating the pod")?;
    let name = created.name_any();
    // gomega.Consistently: looked at at once, then every second, for the whole window.
    let window_ends = Instant::now() + NEVER_READY_WINDOW;
    loop {
        let p = pods
            .get(&name)
            .await
            .with_context(|| format!("getting pod {name}"))?;
        ensure!(!is_ready(&p), "pod should not be ready");
        if Instant::now() >= window_ends {
            break;
        }
        tokio::time::sleep(NEVER_READY_POLL).await;
    }

    let p = pods.get(&name).await?;
    ensure!(
        pod_running_ready(&p).is_err(),
        "pod {ns}/{name} should be not ready"
    );

    let restarts = restart_count(&p);
    ensure!(
        restarts == 0,
        "pod should have a restart count of 0 but got {restarts}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// test/e2e/common/node/pods.go
// ---------------------------------------------------------------------------------------------

/// e2epod.WaitForPodTerminatedInNamespace: the pod comes to be Failed, with `reason` (another
/// reason fails the wait at once); a pod not found is looked for again. podStartTimeout (5m) is
/// cut to [`POD_START`].
async fn wait_for_pod_terminated(
    api: &Api<Pod>,
    name: &str,
    reason: &str,
    ns: &str,
) -> anyhow::Result<()> {
    eventually_every(
        POLL,
        POD_START,
        &format!("pod {name:?} to be terminated with reason {reason}"),
        || async {
            let p = match api.get(name).await {
                Ok(p) => p,
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            if phase(&p) != "Failed" {
                return Ok(None);
            }
            let got = p.status.and_then(|s| s.reason).unwrap_or_default();
            ensure!(
                got == reason,
                "Expected pod {name:?} in namespace {ns:?} to be terminated with reason \
                 {reason:?}, got reason: {got:?}"
            );
            Ok(Some(()))
        },
    )
    .await
}

/// "should allow activeDeadlineSeconds to be updated": a running pause pod given a deadline of
/// 5 s is failed, DeadlineExceeded.
async fn active_deadline_updated(ctx: Ctx) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    // creating the pod
    let name = format!("pod-update-activedeadlineseconds-{}", uuid());
    let value = nanos();
    let pod = restricted(json!({
        "metadata": {"name": name, "labels": {"name": "foo", "time": value}},
        "spec": {"containers": [{"name": "pause", "image": PAUSE}]},
    }));

    // submitting the pod to kubernetes
    create_sync(&pods, pod).await?;

    // verifying the pod is in kubernetes
    let listed = pods
        .list(&ListParams::default().labels(&format!("time={value}")))
        .await
        .context("failed to query for pods")?;
    ensure!(
        listed.items.len() == 1,
        "expected 1 pod labelled time={value}, found {}",
        listed.items.len()
    );

    // updating the pod
    update_pod(&pods, &name, |p| {
        p.spec.get_or_insert_default().active_deadline_seconds = Some(5);
    })
    .await?;

    wait_for_pod_terminated(&pods, &name, "DeadlineExceeded", &ctx.namespace).await
}

// ---------------------------------------------------------------------------------------------
// test/e2e/common/node/init_container.go
// ---------------------------------------------------------------------------------------------

/// What every event of both tests must show until the init container failed: the app
/// containers (when reported) waiting, PodInitializing.
fn app_containers_waiting(p: &Pod) -> anyhow::Result<()> {
    for status in container_statuses(p) {
        let Some(reason) = waiting_reason(&status) else {
            bail!(
                "container {:?} should not be out of waiting: {}",
                status.name,
                debug_json(&status)
            );
        };
        ensure!(
            reason == "PodInitializing",
            "container {:?} should have reason PodInitializing: {}",
            status.name,
            debug_json(&status)
        );
    }
    Ok(())
}

/// The first condition of the RestartAlways test: init2 waits on init1, PodInitializing, and
/// init1 never succeeds; met once init1 has been restarted (it has a last state, terminated).
fn first_init_failed_and_restarted(p: &Pod) -> anyhow::Result<bool> {
    app_containers_waiting(p)?;
    let inits = init_container_statuses(p);
    if inits.len() != 2 {
        return Ok(false);
    }
    let second = &inits[1];
    let Some(reason) = waiting_reason(second) else {
        bail!(
            "second init container should not be out of waiting: {}",
            debug_json(second)
        );
    };
    ensure!(
        reason == "PodInitializing",
        "second init container should have reason PodInitializing: {}",
        debug_json(second)
    );
    let first = &inits[0];
    let terminated = first.state.as_ref().and_then(|s| s.terminated.as_ref());
    ensure!(
        terminated.is_none_or(|t| t.exit_code != 0),
        "first init container should have exitCode != 0: {}",
        debug_json(first)
    );
    // continue until we see an attempt to restart the pod
    Ok(first
        .last_state
        .as_ref()
        .is_some_and(|s| s.terminated.is_some()))
}

/// The first condition of the RestartNever test: init1 succeeds (upstream's messages are its
/// own), then init2 fails.
fn second_init_failed(p: &Pod) -> anyhow::Result<bool> {
    app_containers_waiting(p)?;
    let inits = init_container_statuses(p);
    if inits.len() != 2 {
        return Ok(false);
    }
    let first = &inits[0];
    let Some(terminated) = first.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
        if let Some(reason) = waiting_reason(first) {
            ensure!(
                reason == "PodInitializing",
                "second init container should have reason PodInitializing: {}",
                debug_json(first)
            );
        }
        return Ok(false);
    };
    ensure!(
        terminated.exit_code == 0,
        "first init container should have exitCode != 0: {}",
        debug_json(first)
    );
    let second = &inits[1];
    let Some(terminated) = second.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
        return Ok(false);
    };
    ensure!(
        terminated.exit_code != 0,
        "second init container should have failed: {}",
        debug_json(second)
    );
    Ok(true)
}

/// What both tests check of the pod they end with: in `want_phase`, not Initialized (reason
/// ContainersNotInitialized, `want_message`), with both init containers' statuses.
fn check_not_initialized(end: &Pod, want_phase: &str, want_message: &str) -> anyhow::Result<()> {
    ensure!(
        phase(end) == want_phase,
        "expected phase {want_phase}, got {:?}",
        phase(end)
    );
    let Some(init) = pod_condition(end, "Initialized") else {
        bail!("the pod has no Initialized condition");
    };
    ensure!(
        init.status == "False",
        "expected Initialized to be False, got {:?}",
        init.status
    );
    let reason = init.reason.as_deref().unwrap_or_default();
    ensure!(
        reason == "ContainersNotInitialized",
        "expected the Initialized condition's reason to be ContainersNotInitialized, got \
         {reason:?}"
    );
    let message = init.message.as_deref().unwrap_or_default();
    ensure!(
        message == want_message,
        "expected the Initialized condition's message to be {want_message:?}, got {message:?}"
    );
    let inits = init_container_statuses(end).len();
    ensure!(
        inits == 2,
        "expected 2 init container statuses, got {inits}"
    );
    Ok(())
}

/// Creates the pod: the pods' API, its name, and the resource version to watch it from.
async fn create_init_pod(ctx: &Ctx, pod: Value) -> anyhow::Result<(Api<Pod>, String, String)> {
    let pods: Api<Pod> = ctx.namespaced();
    let pod: Pod = from(pod)?;
    let started = pods
        .create(&PostParams::default(), &pod)
        .await
        .context("creating the pod")?;
    let rv = started.resource_version().unwrap_or_default();
    Ok((pods, started.name_any(), rv))
}

/// "should not start app containers if init containers fail on a RestartAlways pod": init1
/// runs /bin/false. Watched (watchtools.Until, within PodStartTimeout cut to [`POD_START`])
/// until init1 has failed and been restarted, then until it has been restarted three times;
/// the kubelet's back-off makes that a minute or so upstream, and seconds on a simulated node.
/// As in [`init_pod`]'s other tests, the events recorded for checkInvariants are a copy that
/// stays empty upstream, so nothing is checked of them.
async fn init_fails_restart_always(ctx: Ctx) -> anyhow::Result<()> {
    let mut pod = init_pod(
        None,
        json!({"name": "run1", "image": PAUSE, "resources": {"limits": {"cpu": "100m"}}}),
    );
    pod["spec"]["initContainers"][0]["command"] = json!(["/bin/false"]);
    let (pods, name, rv) = create_init_pod(&ctx, pod).await?;
    // watchtools.Until's conditions are met in turn; once one is, the next is first checked
    // against the same event.
    let mut failed_once = false;
    let end = until_pod(&pods, &name, &rv, POD_START, |_, p| {
        if !failed_once {
            // check for the first container to fail at least once
            failed_once = first_init_failed_and_restarted(p)?;
            if !failed_once {
                return Ok(false);
            }
        }
        // verify we get two restarts
        Ok(init_container_statuses(p)
            .first()
            .is_some_and(|s| s.restart_count >= 3))
    })
    .await?;
    check_not_initialized(
        &end,
        "Pending",
        "containers with incomplete status: [init1 init2]",
    )
}

/// "should not start app containers and fail the pod if init containers fail on a RestartNever
/// pod": init2 runs /bin/false. Watched as the RestartAlways test is, until init2 has failed,
/// then until the pod has completed.
async fn init_fails_restart_never(ctx: Ctx) -> anyhow::Result<()> {
    let mut pod = init_pod(
        Some("Never"),
        json!({
            "name": "run1",
            "image": BUSYBOX,
            "command": ["/bin/true"],
            "resources": {"limits": {"cpu": "100m"}},
        }),
    );
    pod["spec"]["initContainers"][1]["command"] = json!(["/bin/false"]);
    let (pods, name, rv) = create_init_pod(&ctx, pod).await?;
    let mut init_failed = false;
    let end = until_pod(&pods, &name, &rv, POD_START, |kind, p| {
        if !init_failed {
            // check for the second container to fail at least once
            init_failed = second_init_failed(p)?;
            if !init_failed {
                return Ok(false);
            }
        }
        pod_completed(kind, p)
    })
    .await?;
    check_not_initialized(&end, "Failed", "containers with incomplete status: [init2]")?;
    let apps = container_statuses(&end);
    let Some(app) = apps.first() else {
        bail!("the pod has no container status");
    };
    ensure!(
        app.state.as_ref().is_some_and(|s| s.waiting.is_some()),
        "expected container {} to be waiting, its state is {:?}",
        app.name,
        app.state
    );
    Ok(())
}
