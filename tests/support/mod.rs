//! Runs `kelp server` as a process and the real kubectl binaries against it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

/// A `kelp server` on a free port.
pub struct KelpServer {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
    pub url: String,
    pub kubeconfig: PathBuf,
    pub ready_line: String,
    cache: tempfile::TempDir,
}

/// The directory of the versioned kubectl binaries (`kubectl.1.32`, `kubectl.1.33`): beside
/// the `kubectl` on PATH (gcloud's dispatcher), or `$KELP_KUBECTL_DIR`.
pub fn kubectl_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("KELP_KUBECTL_DIR") {
        return PathBuf::from(dir);
    }
    let out = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output();
    let path = out
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let dir = Path::new(&path)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    assert!(
        dir.join("kubectl.1.33").exists() && dir.join("kubectl.1.32").exists(),
        "kubectl.1.32 and kubectl.1.33 not found beside the kubectl on PATH ({path:?}); set KELP_KUBECTL_DIR"
    );
    dir
}

pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl KelpServer {
    pub fn start(data_dir: &Path, extra: &[&str]) -> KelpServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kelp"))
            .args(["server", "--https-listen-port", "0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(match std::env::var_os("KELP_TEST_SERVER_LOG") {
                Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
                None => Stdio::null(),
            })
            .spawn()
            .expect("start kelp server");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready_line = lines.next().expect("kelp server printed nothing").unwrap();
        let url = ready_line
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no URL in {ready_line:?}"))
            .to_string();
        let kubeconfig_line = lines.next().unwrap().unwrap();
        let kubeconfig = PathBuf::from(kubeconfig_line.rsplit(' ').next().unwrap());
        lines.next().unwrap().unwrap();
        let cache = tempfile::tempdir().unwrap();
        KelpServer {
            child,
            lines,
            url,
            kubeconfig,
            ready_line,
            cache,
        }
    }

    /// Runs `kubectl.<version>` with the admin kubeconfig and a fresh discovery cache.
    pub fn kubectl(&self, version: &str, args: &[&str]) -> Output {
        self.kubectl_with_stdin(version, args, None)
    }

    /// Starts kubectl without waiting for it (for `get -w`).
    pub fn kubectl_spawn(&self, version: &str, args: &[&str]) -> std::process::Child {
        Command::new(kubectl_dir().join(format!("kubectl.{version}")))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("KUBECACHEDIR", self.cache.path().join(version))
            .env("HOME", self.cache.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl")
    }

    pub fn kubectl_with_stdin(&self, version: &str, args: &[&str], stdin: Option<&str>) -> Output {
        self.kubectl_full(version, args, stdin, &[])
    }

    /// kubectl with extra environment (EDITOR for `kubectl edit`).
    pub fn kubectl_env(&self, version: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.kubectl_full(version, args, None, env)
    }

    /// kubectl with another user's kubeconfig.
    pub fn kubectl_as(&self, kubeconfig: &Path, version: &str, args: &[&str]) -> Output {
        self.run_kubectl(kubeconfig, version, args, None, &[])
    }

    /// kubectl with another user's kubeconfig and a standard input.
    pub fn run_kubectl_stdin(&self, kubeconfig: &Path, args: &[&str], stdin: &str) -> Output {
        self.run_kubectl(kubeconfig, "1.33", args, Some(stdin), &[])
    }

    /// A kubeconfig for this server with the given `user:` entry (YAML lines indented by
    /// four spaces; empty for an anonymous user), written to `path`.
    pub fn write_kubeconfig(&self, path: &Path, user: &str) {
        let admin = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let ca = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
            .unwrap();
        let user = if user.is_empty() {
            "    {}".to_string()
        } else {
            user.to_string()
        };
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: kelp\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n{user}\ncontexts:\n- name: kelp\n  context:\n    cluster: kelp\n    user: u\ncurrent-context: kelp\n",
                self.url
            ),
        )
        .unwrap();
    }

    fn kubectl_full(
        &self,
        version: &str,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Output {
        self.run_kubectl(&self.kubeconfig, version, args, stdin, env)
    }

    fn run_kubectl(
        &self,
        kubeconfig: &Path,
        version: &str,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Output {
        use std::io::Write;
        let mut child = Command::new(kubectl_dir().join(format!("kubectl.{version}")))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .envs(env.iter().copied())
            .env("KUBECACHEDIR", self.cache.path().join(version))
            .env("HOME", self.cache.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// SIGTERM, then what the server printed until it exited.
    pub fn stop(mut self) -> Vec<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let rest: Vec<String> = self.lines.by_ref().map_while(Result::ok).collect();
        assert!(
            self.child.wait().unwrap().success(),
            "kelp server failed: {rest:?}"
        );
        rest
    }
}

impl Drop for KelpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `app` over HTTPS with `config` on a free loopback port, on a thread of its own;
/// returns the port.
pub fn serve_tls(app: axum::Router, config: rustls::ServerConfig) -> u16 {
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
    });
    port
}

/// A serving certificate for `dns` names and 127.0.0.1 from a CA kept in `dir`: the chain,
/// its key, and the CA (PEM).
pub fn serving_cert(
    dir: &Path,
    dns: &[&str],
) -> (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
    String,
) {
    use rustls::pki_types::pem::PemObject;
    let pki = kelp_auth::Pki::load_or_create(dir).unwrap();
    let dns: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
    let serving = pki.serving(&dns, &["127.0.0.1".parse().unwrap()]).unwrap();
    let certs: Vec<_> =
        rustls::pki_types::CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).unwrap();
    (certs, key, pki.ca_pem().to_string())
}

/// `kelp simulate` nodes, stopped on drop.
pub struct Simulated(std::process::Child);

impl Simulated {
    pub fn start(kubeconfig: &Path, nodes: usize) -> Simulated {
        Simulated::start_named(kubeconfig, nodes, "kelp-sim-")
    }

    pub fn start_named(kubeconfig: &Path, nodes: usize, prefix: &str) -> Simulated {
        Simulated::start_with(kubeconfig, nodes, prefix, &[])
    }

    pub fn start_with(kubeconfig: &Path, nodes: usize, prefix: &str, extra: &[&str]) -> Simulated {
        let child = Command::new(env!("CARGO_BIN_EXE_kelp"))
            .args([
                "simulate",
                "--node-prefix",
                prefix,
                "--nodes",
                &nodes.to_string(),
                "--kubeconfig",
            ])
            .arg(kubeconfig)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kelp simulate");
        Simulated(child)
    }
}

impl Drop for Simulated {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 200 ms until it returns Some, or panics after `secs` with the last state.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if std::time::Instant::now() > deadline => {
                panic!("timed out waiting for {what}: {last}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}
