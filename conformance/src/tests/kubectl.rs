//! [sig-cli] Kubectl client (test/e2e/kubectl/kubectl.go): the conformance tests that drive
//! the run's kubectl (`--kubectl` / `KELP_CONFORMANCE_KUBECTL`) against the cluster, with the
//! manifests of test/e2e/testing-manifests/kubectl with their images filled in. Every kubectl
//! runs with `--namespace=<test namespace>` before its arguments, as upstream's
//! e2ekubectl.RunKubectlOrDie does. On Kelp the pods run on simulated nodes: they go Running
//! and Ready without containers, which is all these tests need.

use std::time::Duration;

use anyhow::{anyhow, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use regex::Regex;

use super::crd_openapi::run_kubectl;
use super::tests;
use crate::framework::{eventually_every, is_ready};
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-cli] Kubectl client Kubectl api-versions should check if v1 is in available api versions" => api_versions,
        "[sig-cli] Kubectl client Kubectl cluster-info should check if Kubernetes control plane services is included in cluster-info" => cluster_info,
        "[sig-cli] Kubectl client Kubectl version should check is all data is printed" => version,
        "[sig-cli] Kubectl client Kubectl label should update the label on a resource" => label_update,
        "[sig-cli] Kubectl client Kubectl server-side dry-run should check if kubectl can dry-run update Pods" => dry_run_update_pods,
        "[sig-cli] Kubectl client Kubectl diff should check if kubectl diff finds a difference for Deployments" => diff_deployments,
        "[sig-cli] Kubectl client Kubectl replace should update a single-container pod's image" => replace_pod_image,
        "[sig-cli] Kubectl client Kubectl run pod should create a pod from an image when restart is Never" => run_pod_restart_never,
        "[sig-cli] Kubectl client Kubectl patch should add annotations for pods in rc" => patch_annotations_rc,
    ]
}

// ---------------------------------------------------------------------------------------------
// Images (test/utils/image/manifest.go at v1.33) and manifests (testing-manifests/kubectl).

const HTTPD_IMAGE: &str = "registry.k8s.io/e2e-test-images/httpd:2.4.38-4";
const BUSYBOX_IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.37.0-1";
pub(super) const AGNHOST_IMAGE: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";
const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";

const PAUSE_POD_SELECTOR: &str = "name=pause";
const PAUSE_POD_NAME: &str = "pause";

/// framework.PodStartTimeout.
const POD_START_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// podRunningTimeoutArg: `--pod-running-timeout=` framework.PodStartShortTimeout (2m).
const POD_RUNNING_TIMEOUT_ARG: &str = "--pod-running-timeout=2m0s";

/// pause-pod.yaml.in.
fn pause_pod_yaml() -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: pause
  labels:
    name: pause
spec:
  containers:
  - name: pause
    image: {PAUSE_IMAGE}
    ports:
    - containerPort: 80
"
    )
}

/// agnhost-primary-controller.json.in.
pub(super) fn agnhost_controller_json() -> String {
    format!(
        r#"{{
   "kind":"ReplicationController",
   "apiVersion":"v1",
   "metadata":{{
      "name":"agnhost-primary",
      "labels":{{
         "app":"agnhost",
         "role":"primary"
      }}
   }},
   "spec":{{
      "replicas":1,
      "selector":{{
         "app":"agnhost",
         "role":"primary"
      }},
      "template":{{
         "metadata":{{
            "labels":{{
               "app":"agnhost",
               "role":"primary"
            }}
         }},
         "spec":{{
            "containers":[
               {{
                  "name":"agnhost-primary",
                  "image": "{AGNHOST_IMAGE}",
                  "ports":[
                     {{
                        "name":"agnhost-server",
                        "containerPort":6379
                     }}
                  ]
               }}
            ]
         }}
      }}
   }}
}}
"#
    )
}

/// httpd-deployment3.yaml.in.
fn httpd_deployment3_yaml() -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpd-deployment
spec:
  selector:
    matchLabels:
      app: httpd
  template:
    metadata:
      labels:
        app: httpd
    spec:
      containers:
      - name: httpd
        image: {HTTPD_IMAGE}
        ports:
        - containerPort: 80
"
    )
}

// ---------------------------------------------------------------------------------------------
// Helpers (e2ekubectl, e2epod, ClusterVerification, and kubectl.go's own).

/// e2ekubectl.RunKubectlOrDie: kubectl's stdout, or the test fails with its error.
pub(super) async fn kubectl_or_die(ctx: &Ctx, args: &[&str]) -> anyhow::Result<String> {
    run_kubectl(ctx, None, args).await?.map_err(|e| anyhow!(e))
}

/// e2ekubectl.RunKubectlOrDieInput: as [`kubectl_or_die`], `input` on kubectl's stdin.
pub(super) async fn kubectl_or_die_input(
    ctx: &Ctx,
    input: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    run_kubectl(ctx, Some(input), args)
        .await?
        .map_err(|e| anyhow!(e))
}

/// Runs the test's body, then its AfterEach whatever the body gave (ginkgo runs AfterEach
/// after a failed BeforeEach or It too); the body's failure is the one reported.
async fn with_after_each<B, A>(body: B, after_each: A) -> anyhow::Result<()>
where
    B: std::future::Future<Output = anyhow::Result<()>>,
    A: std::future::Future<Output = anyhow::Result<()>>,
{
    let result = body.await;
    let cleanup = after_each.await;
    result.and(cleanup)
}

/// The pod's phase, "" when it has none yet.
fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// e2epod.WaitTimeoutForPodReadyInNamespace: the pod is Ready within `timeout`; a pod that
/// ran to completion (Succeeded or Failed) fails the wait at once.
async fn wait_for_pod_ready(ctx: &Ctx, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    eventually_every(
        Duration::from_millis(500),
        timeout,
        &format!("pod {name:?} to be running and ready"),
        || {
            let pods = pods.clone();
            async move {
                let Some(pod) = pods.get_opt(name).await? else {
                    return Ok(None);
                };
                match phase(&pod) {
                    "Succeeded" | "Failed" => {
                        bail!("pod {name:?} ran to completion: phase {}", phase(&pod))
                    }
                    _ => Ok(is_ready(&pod).then_some(())),
                }
            }
        },
    )
    .await
}

/// testutils.WaitForPodsWithLabelRunning: within 10 minutes some pods match `selector`, and
/// all of them are Running (upstream checks every 5 s; this checks every second).
async fn wait_for_pods_with_label_running(ctx: &Ctx, selector: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = ctx.namespaced();
    let lp = ListParams::default().labels(selector);
    eventually_every(
        Duration::from_secs(1),
        Duration::from_secs(10 * 60),
        &format!("pods with labels {selector:?} to be running"),
        || {
            let (pods, lp) = (pods.clone(), lp.clone());
            async move {
                let list = pods.list(&lp).await?.items;
                Ok((!list.is_empty() && list.iter().all(|p| phase(p) == "Running")).then_some(()))
            }
        },
    )
    .await
}

/// The Kubectl client's clusterState(): the pods labelled app=agnhost in the test namespace
/// whose phase is Running (PodStateVerification's filter).
async fn agnhost_running_pods(ctx: &Ctx) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = ctx.namespaced();
    let list = pods
        .list(&ListParams::default().labels("app=agnhost"))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| phase(p) == "Running")
        .collect())
}

/// waitForOrFailWithDebug: clusterState().WaitFor(atLeast, PodStartTimeout) — polled every
/// second (the first poll after one), until at least `at_least` pods pass the filter.
pub(super) async fn wait_for_or_fail(ctx: &Ctx, at_least: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + POD_START_TIMEOUT;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let found = agnhost_running_pods(ctx).await?.len();
        if found >= at_least {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "Verified {found} of {at_least} pods , error: timed out waiting for the condition"
            );
        }
    }
}

/// clusterState().ForEach: the filtered pods, of which there must be some.
pub(super) async fn for_each_pod(ctx: &Ctx) -> anyhow::Result<Vec<Pod>> {
    let pods = agnhost_running_pods(ctx).await?;
    if pods.is_empty() {
        bail!("No pods matched the filter.");
    }
    Ok(pods)
}

/// cleanupKubectlInputs: deletes what `contents` made (forced, no grace), then assertCleanup:
/// within a minute (polled every 500 ms, at once first) no rc or service and no pod not being
/// deleted matches any of `selectors`.
async fn cleanup_kubectl_inputs(
    ctx: &Ctx,
    contents: &str,
    selectors: &[&str],
) -> anyhow::Result<()> {
    kubectl_or_die_input(
        ctx,
        contents,
        &["delete", "--grace-period=0", "--force", "-f", "-"],
    )
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut left: Option<String> = None;
        for &selector in selectors {
            let resources =
                kubectl_or_die(ctx, &["get", "rc,svc", "-l", selector, "--no-headers"]).await?;
            if !resources.is_empty() {
                left = Some(format!("Resources left running after stop:\n{resources}"));
                break;
            }
            let pods = kubectl_or_die(
                ctx,
                &[
                    "get",
                    "pods",
                    "-l",
                    selector,
                    "-o",
                    r#"go-template={{ range .items }}{{ if not .metadata.deletionTimestamp }}{{ .metadata.name }}{{ "\n" }}{{ end }}{{ end }}"#,
                ],
            )
            .await?;
            if !pods.is_empty() {
                left = Some(format!("Pods left unterminated after stop:\n{pods}"));
                break;
            }
        }
        let Some(e) = left else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("{e}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// checkContainersImage: true when the pod does NOT have exactly one container of `image`.
fn check_containers_image(pod: &Pod, image: &str) -> bool {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[]);
    containers.len() != 1 || containers[0].image.as_deref() != Some(image)
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Kubectl api-versions: the output lists v1.
async fn api_versions(ctx: Ctx) -> anyhow::Result<()> {
    // validating api versions
    let output = kubectl_or_die(&ctx, &["api-versions"]).await?;
    if !output.contains("v1") {
        bail!("No v1 in kubectl api-versions");
    }
    Ok(())
}

/// Kubectl cluster-info: the control plane is said to be running (the strings are searched,
/// not matched whole: kubectl colours them).
async fn cluster_info(ctx: Ctx) -> anyhow::Result<()> {
    // validating cluster-info
    let output = kubectl_or_die(&ctx, &["cluster-info"]).await?;
    for item in ["Kubernetes control plane", "is running at"] {
        if !output.contains(item) {
            bail!("Missing {item} in kubectl cluster-info");
        }
    }
    Ok(())
}

/// Kubectl version: a client and a server version, in the long (before 1.28) or the short
/// form.
async fn version(ctx: Ctx) -> anyhow::Result<()> {
    let version_string = kubectl_or_die(&ctx, &["version"]).await?;
    for item in ["Client Version: ", "Server Version: "] {
        let old = Regex::new(&format!(
            r#"{item}version.Info\{{Major:"\d", Minor:"\d+\+?", GitVersion:"v\d\.\d+\.[\d\w\-\.\+]+", GitCommit:"[0-9a-f]+""#
        ))?;
        let new = Regex::new(&format!(r"{item}v\d\.\d+\.[\d\w\-\.\+]+"))?;
        if !old.is_match(&version_string) && !new.is_match(&version_string) {
            bail!("Item {item} value is not valid in {version_string}\n");
        }
    }
    Ok(())
}

/// Kubectl label: a label added by `kubectl label` shows in `get -L`, and goes once removed.
async fn label_update(ctx: Ctx) -> anyhow::Result<()> {
    let pod_yaml = pause_pod_yaml();
    let body = async {
        // BeforeEach: creating the pod
        kubectl_or_die_input(&ctx, &pod_yaml, &["create", "-f", "-"]).await?;
        wait_for_pod_ready(&ctx, PAUSE_POD_NAME, POD_START_TIMEOUT).await?;

        let label_name = "testing-label";
        let label_value = "testing-label-value";

        // adding the label testing-label with value testing-label-value to a pod
        kubectl_or_die(
            &ctx,
            &[
                "label",
                "pods",
                PAUSE_POD_NAME,
                &format!("{label_name}={label_value}"),
            ],
        )
        .await?;
        // verifying the pod has the label testing-label with the value testing-label-value
        let output =
            kubectl_or_die(&ctx, &["get", "pod", PAUSE_POD_NAME, "-L", label_name]).await?;
        if !output.contains(label_value) {
            bail!("Failed updating label {label_name} to the pod {PAUSE_POD_NAME}");
        }

        // removing the label testing-label of a pod
        kubectl_or_die(
            &ctx,
            &["label", "pods", PAUSE_POD_NAME, &format!("{label_name}-")],
        )
        .await?;
        // verifying the pod doesn't have the label testing-label
        let output =
            kubectl_or_die(&ctx, &["get", "pod", PAUSE_POD_NAME, "-L", label_name]).await?;
        if output.contains(label_value) {
            bail!("Failed removing label {label_name} of the pod {PAUSE_POD_NAME}");
        }
        Ok::<(), anyhow::Error>(())
    };
    with_after_each(
        body,
        cleanup_kubectl_inputs(&ctx, &pod_yaml, &[PAUSE_POD_SELECTOR]),
    )
    .await
}

/// Kubectl server-side dry-run: a dry-run patch of the pod's image leaves the image alone.
async fn dry_run_update_pods(ctx: Ctx) -> anyhow::Result<()> {
    // running the image httpd
    let pod_name = "e2e-test-httpd-pod";
    kubectl_or_die(
        &ctx,
        &[
            "run",
            pod_name,
            &format!("--image={HTTPD_IMAGE}"),
            POD_RUNNING_TIMEOUT_ARG,
            &format!("--labels=run={pod_name}"),
        ],
    )
    .await?;

    // replace the image in the pod with server-side dry-run
    let spec_image = format!(
        r#"{{"spec":{{"containers":[{{"name": "{pod_name}","image": "{BUSYBOX_IMAGE}"}}]}}}}"#
    );
    kubectl_or_die(
        &ctx,
        &[
            "patch",
            "pod",
            pod_name,
            "-p",
            &spec_image,
            "--dry-run=server",
        ],
    )
    .await?;

    // verifying the pod e2e-test-httpd-pod has the right image httpd
    let pods: Api<Pod> = ctx.namespaced();
    let pod = pods
        .get(pod_name)
        .await
        .map_err(|e| anyhow!("Failed getting pod {pod_name}: {e}"))?;
    if check_containers_image(&pod, HTTPD_IMAGE) {
        bail!("Failed creating pod with expected image {HTTPD_IMAGE}");
    }

    kubectl_or_die(&ctx, &["delete", "pods", pod_name]).await?;
    Ok(())
}

/// Kubectl diff: the diff of the live Deployment against one declaring another image shows
/// both images.
async fn diff_deployments(ctx: Ctx) -> anyhow::Result<()> {
    // create deployment with httpd image
    let deployment = httpd_deployment3_yaml();
    kubectl_or_die_input(&ctx, &deployment, &["create", "-f", "-"]).await?;

    // verify diff finds difference between live and declared image
    let deployment = deployment.replacen(HTTPD_IMAGE, BUSYBOX_IMAGE, 1);
    if !deployment.contains(BUSYBOX_IMAGE) {
        bail!("Failed replacing image from {HTTPD_IMAGE} to {BUSYBOX_IMAGE} in:\n{deployment}\n");
    }
    // e2ekubectl.RunKubectlInput: stdout whether kubectl succeeded or not (kubectl diff exits
    // 1 when it finds a difference). Upstream's exit-code check never fires (the framework's
    // error is no *exec.ExitError), so only the output is checked, as there.
    let ns = format!("--namespace={}", ctx.namespace);
    let args = [ns.as_str(), "diff", "-f", "-"];
    let (ok, output, stderr) = ctx.kubectl(&args, Some(deployment.as_str())).await?;
    let err = if ok {
        "<nil>".to_string()
    } else {
        format!(
            "error running kubectl {}:\nCommand stdout:\n{output}\nstderr:\n{stderr}\nerror:\nkubectl exited unsuccessfully",
            args.join(" ")
        )
    };
    for item in [HTTPD_IMAGE, BUSYBOX_IMAGE] {
        if !output.contains(item) {
            bail!("Missing {item} in kubectl diff output:\n{output}\n{err}\n");
        }
    }

    kubectl_or_die_input(&ctx, &deployment, &["delete", "-f", "-"]).await?;
    Ok(())
}

/// Kubectl replace: replacing the pod with its JSON, image changed, changes the image.
async fn replace_pod_image(ctx: Ctx) -> anyhow::Result<()> {
    let pod_name = "e2e-test-httpd-pod";
    let body = async {
        // running the image httpd
        kubectl_or_die(
            &ctx,
            &[
                "run",
                pod_name,
                &format!("--image={HTTPD_IMAGE}"),
                POD_RUNNING_TIMEOUT_ARG,
                &format!("--labels=run={pod_name}"),
            ],
        )
        .await?;

        // verifying the pod e2e-test-httpd-pod is running
        wait_for_pods_with_label_running(&ctx, &format!("run={pod_name}"))
            .await
            .map_err(|e| anyhow!("Failed getting pod {pod_name}: {e}"))?;

        // verifying the pod e2e-test-httpd-pod was created
        let pod_json = kubectl_or_die(&ctx, &["get", "pod", pod_name, "-o", "json"]).await?;
        if !pod_json.contains(pod_name) {
            bail!("Failed to find pod {pod_name} in [{pod_json}]");
        }

        // replace the image in the pod
        let pod_json = pod_json.replacen(HTTPD_IMAGE, BUSYBOX_IMAGE, 1);
        kubectl_or_die_input(&ctx, &pod_json, &["replace", "-f", "-"]).await?;

        // verifying the pod e2e-test-httpd-pod has the right image busybox
        let pods: Api<Pod> = ctx.namespaced();
        let pod = pods
            .get(pod_name)
            .await
            .map_err(|e| anyhow!("Failed getting deployment {pod_name}: {e}"))?;
        if check_containers_image(&pod, BUSYBOX_IMAGE) {
            bail!("Failed creating pod with expected image {BUSYBOX_IMAGE}");
        }
        Ok::<(), anyhow::Error>(())
    };
    with_after_each(body, async {
        kubectl_or_die(&ctx, &["delete", "pods", pod_name])
            .await
            .map(drop)
    })
    .await
}

/// Kubectl run pod: `kubectl run --restart=Never` makes a pod of the image that never
/// restarts.
async fn run_pod_restart_never(ctx: Ctx) -> anyhow::Result<()> {
    let pod_name = "e2e-test-httpd-pod";
    let body = async {
        // running the image httpd
        kubectl_or_die(
            &ctx,
            &[
                "run",
                pod_name,
                "--restart=Never",
                POD_RUNNING_TIMEOUT_ARG,
                &format!("--image={HTTPD_IMAGE}"),
            ],
        )
        .await?;
        // verifying the pod e2e-test-httpd-pod was created
        let pods: Api<Pod> = ctx.namespaced();
        let pod = pods
            .get(pod_name)
            .await
            .map_err(|e| anyhow!("Failed getting pod {pod_name}: {e}"))?;
        if check_containers_image(&pod, HTTPD_IMAGE) {
            bail!("Failed creating pod {pod_name} with expected image {HTTPD_IMAGE}");
        }
        let restart_policy = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
        if restart_policy != Some("Never") {
            bail!("Failed creating a pod with correct restart policy for --restart=Never");
        }
        Ok::<(), anyhow::Error>(())
    };
    with_after_each(body, async {
        kubectl_or_die(&ctx, &["delete", "pods", pod_name])
            .await
            .map(drop)
    })
    .await
}

/// Kubectl patch: `kubectl patch` adds an annotation to each pod of the agnhost RC.
async fn patch_annotations_rc(ctx: Ctx) -> anyhow::Result<()> {
    let controller_json = agnhost_controller_json();
    // creating Agnhost RC
    kubectl_or_die_input(&ctx, &controller_json, &["create", "-f", "-"]).await?;
    // Waiting for Agnhost primary to start.
    wait_for_or_fail(&ctx, 1).await?;
    // patching all pods
    for pod in for_each_pod(&ctx).await? {
        let name = pod.metadata.name.clone().unwrap_or_default();
        kubectl_or_die(
            &ctx,
            &[
                "patch",
                "pod",
                &name,
                "-p",
                r#"{"metadata":{"annotations":{"x":"y"}}}"#,
            ],
        )
        .await?;
    }

    // checking annotations
    for pod in for_each_pod(&ctx).await? {
        let found = pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.get("x").is_some_and(|v| v == "y"));
        if !found {
            bail!("Added annotation not found");
        }
    }
    Ok(())
}
