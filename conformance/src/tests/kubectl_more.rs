//! More [sig-cli] Kubectl client tests (test/e2e/kubectl/kubectl.go): `kubectl describe` of
//! the agnhost RC, its pod, a service, a node and the namespace, and `kubectl proxy` on a port
//! of the OS's choosing and on a Unix socket. Like `kubectl.rs`, every kubectl runs with
//! `--namespace=<test namespace>` before its arguments.
//!
//! The describe test keeps upstream's expectations whole: Kelp's simulated kubelet reports a
//! pod as a kubelet would (Running, its container's state Running with the spec's image, a
//! pod IP, the node), though no container runs.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use regex::Regex;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout};

use super::kubectl::{
    AGNHOST_IMAGE, agnhost_controller_json, for_each_pod, kubectl_or_die, kubectl_or_die_input,
    wait_for_or_fail,
};
use super::tests;
use crate::{Ctx, Test};

pub fn tests() -> Vec<Test> {
    tests![
        "[sig-cli] Kubectl client Kubectl describe should check if kubectl describe prints relevant information for rc and pods" => describe_rc_and_pods,
        "[sig-cli] Kubectl client Proxy server should support proxy with --port 0" => proxy_port_zero,
        "[sig-cli] Kubectl client Proxy server should support --unix-socket=/path" => proxy_unix_socket,
    ]
}

/// agnhost-primary-service.json.
const AGNHOST_SERVICE_JSON: &str = r#"{
   "kind": "Service",
   "apiVersion": "v1",
   "metadata": {
      "name": "agnhost-primary",
      "labels": {
         "app": "agnhost",
         "role": "primary"
      }
   },
   "spec": {
      "ports": [
         {
            "port": 6379,
            "targetPort": "agnhost-server"
         }
      ],
      "selector": {
         "app": "agnhost",
         "role": "primary"
      }
   }
}"#;

// ---------------------------------------------------------------------------------------------
// kubectl describe

/// checkOutputReturnError: each requirement's first string is found on a line at or after the
/// line the one before was found on, and its other strings on that same line.
fn check_output(output: &str, required: &[&[&str]]) -> anyhow::Result<()> {
    let lines: Vec<&str> = output.split('\n').collect();
    let mut current = 0;
    for requirement in required {
        let Some((first, rest)) = requirement.split_first() else {
            continue;
        };
        while current < lines.len() && !lines[current].contains(first) {
            current += 1;
        }
        if current == lines.len() {
            bail!("failed to find {first} in {output}");
        }
        for item in rest {
            if !lines[current].contains(item) {
                bail!("failed to find {item} in {}", lines[current]);
            }
        }
    }
    Ok(())
}

/// checkKubectlOutputWithRetry: kubectl's output meets `required` within a minute, run every
/// second (the first time at once); a kubectl that fails ends the wait.
async fn check_kubectl_output_with_retry(
    ctx: &Ctx,
    required: &[&[&str]],
    args: &[&str],
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let output = kubectl_or_die(ctx, args).await?;
        let Err(e) = check_output(&output, required) else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Kubectl describe: the agnhost RC, its pod, its service, a node and the test namespace are
/// each described with their relevant fields, in upstream's line order.
async fn describe_rc_and_pods(ctx: Ctx) -> anyhow::Result<()> {
    let ns = ctx.namespace.as_str();
    kubectl_or_die_input(&ctx, &agnhost_controller_json(), &["create", "-f", "-"]).await?;
    kubectl_or_die_input(&ctx, AGNHOST_SERVICE_JSON, &["create", "-f", "-"]).await?;

    // Waiting for Agnhost primary to start.
    wait_for_or_fail(&ctx, 1).await?;

    // Pod
    for pod in for_each_pod(&ctx).await? {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let output = kubectl_or_die(&ctx, &["describe", "pod", &name]).await?;
        check_output(
            &output,
            &[
                &["Name:", "agnhost-primary-"],
                &["Namespace:", ns],
                &["Node:"],
                &["Labels:", "app=agnhost"],
                &["role=primary"],
                &["Annotations:"],
                &["Status:", "Running"],
                &["IP:"],
                &["Controlled By:", "ReplicationController/agnhost-primary"],
                &["Image:", AGNHOST_IMAGE],
                &["State:", "Running"],
                &["QoS Class:", "BestEffort"],
            ],
        )?;
    }

    // Rc
    check_kubectl_output_with_retry(
        &ctx,
        &[
            &["Name:", "agnhost-primary"],
            &["Namespace:", ns],
            &["Selector:", "app=agnhost,role=primary"],
            &["Labels:", "app=agnhost"],
            &["role=primary"],
            &["Annotations:"],
            &["Replicas:", "1 current", "1 desired"],
            &[
                "Pods Status:",
                "1 Running",
                "0 Waiting",
                "0 Succeeded",
                "0 Failed",
            ],
            &["Pod Template:"],
            &["Image:", AGNHOST_IMAGE],
            &["Events:"],
        ],
        &["describe", "rc", "agnhost-primary"],
    )
    .await?;

    // Service
    let output = kubectl_or_die(&ctx, &["describe", "service", "agnhost-primary"]).await?;
    check_output(
        &output,
        &[
            &["Name:", "agnhost-primary"],
            &["Namespace:", ns],
            &["Labels:", "app=agnhost"],
            &["role=primary"],
            &["Annotations:"],
            &["Selector:", "app=agnhost", "role=primary"],
            &["Type:", "ClusterIP"],
            &["IP:"],
            &["Port:", "<unset>", "6379/TCP"],
            &["Endpoints:"],
            &["Session Affinity:", "None"],
        ],
    )?;

    // Node (listing unschedulable nodes too is fine here)
    let nodes = ctx.cluster::<Node>().list(&ListParams::default()).await?;
    let Some(node_name) = nodes.items.first().and_then(|n| n.metadata.name.clone()) else {
        bail!("the cluster has no nodes");
    };
    let output = kubectl_or_die(&ctx, &["describe", "node", &node_name]).await?;
    check_output(
        &output,
        &[
            &["Name:", node_name.as_str()],
            &["Labels:"],
            &["Annotations:"],
            &["CreationTimestamp:"],
            &["Conditions:"],
            &[
                "Type",
                "Status",
                "LastHeartbeatTime",
                "LastTransitionTime",
                "Reason",
                "Message",
            ],
            &["Addresses:"],
            &["Capacity:"],
            &["Version:"],
            &["Kernel Version:"],
            &["OS Image:"],
            &["Container Runtime Version:"],
            &["Kubelet Version:"],
            &["Kube-Proxy Version:"],
            &["Pods:"],
        ],
    )?;

    // Namespace
    let output = kubectl_or_die(&ctx, &["describe", "namespace", ns]).await?;
    check_output(
        &output,
        &[
            &["Name:", ns],
            &["Labels:"],
            &["Annotations:"],
            &["Status:", "Active"],
        ],
    )?;

    // Quota and limitrange are skipped, as upstream does.
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// kubectl proxy

/// How long kubectl proxy may take to say it serves (upstream waits on its first output
/// without a limit; the test's own timeout would end it).
const PROXY_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `kubectl proxy`; [`Proxy::stop`] kills it (as does dropping it).
struct Proxy {
    child: Child,
    /// Held open after the first line: a Go program writing to a closed stdout dies of SIGPIPE.
    _stdout: BufReader<ChildStdout>,
    /// The first line it printed ("Starting to serve on ...").
    first_line: String,
}

impl Proxy {
    /// framework.StartCmdAndStreamOutput of `kubectl --namespace=<ns> <args>`, then its first
    /// line of output; when none comes, the error carries what kubectl said on stderr.
    async fn start(ctx: &Ctx, args: &[&str]) -> anyhow::Result<Proxy> {
        let ns = format!("--namespace={}", ctx.namespace);
        let mut all = vec![ns.as_str()];
        all.extend_from_slice(args);
        let mut cmd = ctx.kubectl_command(&all)?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running kubectl {}", all.join(" ")))?;
        let stdout = child
            .stdout
            .take()
            .context("kubectl's stdout is not piped")?;
        let mut stdout = BufReader::new(stdout);
        let mut first_line = String::new();
        let read =
            tokio::time::timeout(PROXY_START_TIMEOUT, stdout.read_line(&mut first_line)).await;
        let failure = match read {
            Ok(Ok(n)) if n > 0 => None,
            Ok(Ok(_)) => Some("kubectl exited without output".to_string()),
            Ok(Err(e)) => Some(format!("reading kubectl's stdout: {e}")),
            Err(_) => Some(format!("no output from kubectl in {PROXY_START_TIMEOUT:?}")),
        };
        if let Some(failure) = failure {
            let _ = child.kill().await;
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr).await;
            }
            bail!("kubectl {}: {failure}; stderr: {stderr}", all.join(" "));
        }
        Ok(Proxy {
            child,
            _stdout: stdout,
            first_line,
        })
    }

    /// framework.TryKill.
    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A GET of `path` over `stream` (HTTP/1.1, the connection closed after the response), as
/// upstream's curl: the body (a chunked one made whole), whatever the status.
async fn http_get<S>(mut stream: S, host: &str, path: &str) -> anyhow::Result<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the response has no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    ensure!(
        status_line.starts_with("HTTP/"),
        "not an HTTP response: {head:?}"
    );
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = &raw[end + 4..];
    if chunked {
        dechunk(body)
    } else {
        Ok(body.to_vec())
    }
}

/// A chunked body (RFC 9112 §7.1) made whole; extensions and trailers are ignored.
fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk size line without its end")?;
        let line = String::from_utf8_lossy(&rest[..eol]);
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .with_context(|| format!("a bad chunk size line {line:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        ensure!(rest.len() >= size + 2, "a chunk cut short");
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// startProxyServer: `kubectl proxy -p 0 --disable-filter`, and the port its first line says
/// it serves on.
async fn start_proxy_server(ctx: &Ctx) -> anyhow::Result<(u16, Proxy)> {
    let proxy = Proxy::start(ctx, &["proxy", "-p", "0", "--disable-filter"]).await?;
    let served = Regex::new(r"Starting to serve on 127\.0\.0\.1:([0-9]+)")?;
    let port = served
        .captures(&proxy.first_line)
        .and_then(|c| c[1].parse::<u16>().ok());
    match port {
        Some(port) => Ok((port, proxy)),
        None => {
            let output = proxy.first_line.clone();
            proxy.stop().await;
            bail!("Failed to parse port from proxy stdout: {output}")
        }
    }
}

/// Proxy server --port 0: the proxy on the port the OS picked serves /api/, listing at least
/// one version.
async fn proxy_port_zero(ctx: Ctx) -> anyhow::Result<()> {
    // starting the proxy server
    let (port, proxy) = start_proxy_server(&ctx)
        .await
        .map_err(|e| anyhow!("Failed to start proxy server: {e:#}"))?;
    // curling proxy /api/ output
    let result = async {
        let stream = tokio::net::TcpStream::connect(("localhost", port)).await?;
        let body = http_get(stream, &format!("localhost:{port}"), "/api/").await?;
        let versions: Value = serde_json::from_slice(&body).with_context(|| {
            format!(
                "Failed to parse /api output {}",
                String::from_utf8_lossy(&body)
            )
        })?;
        anyhow::Ok(versions)
    }
    .await
    .map_err(|e| anyhow!("Expected at least one supported apiversion, got error {e:#}"));
    proxy.stop().await;
    let versions = result?;
    let found = versions["versions"].as_array().map_or(0, Vec::len);
    ensure!(
        found >= 1,
        "Expected at least one supported apiversion, got {versions}"
    );
    Ok(())
}

/// curlUnix: a GET of `path` over the Unix socket at `socket` (the host is not looked at).
async fn curl_unix(path: &str, socket: &Path) -> anyhow::Result<Vec<u8>> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    http_get(stream, "unused", path).await
}

/// Proxy server --unix-socket: the proxy serves /api on a Unix socket. Upstream asks only that
/// the request goes through, whatever its status; so does this.
async fn proxy_unix_socket(ctx: Ctx) -> anyhow::Result<()> {
    // Starting the proxy
    let dir = tempfile::Builder::new()
        .prefix("kubectl-proxy-unix")
        .tempdir()
        .map_err(|e| anyhow!("Failed to create temporary directory: {e}"))?;
    let socket = dir.path().join("test");
    let flag = format!("--unix-socket={}", socket.display());
    let proxy = Proxy::start(&ctx, &["proxy", &flag])
        .await
        .map_err(|e| anyhow!("Failed to start kubectl command: {e:#}"))?;
    // retrieving proxy /api/ output
    let result = curl_unix("/api", &socket)
        .await
        .map_err(|e| anyhow!("Failed get of /api at {}: {e:#}", socket.display()));
    proxy.stop().await;
    result.map(drop)
}
