//! `kelp-conformance`: runs the ported conformance tests against the cluster of `--kubeconfig`
//! (or `$KUBECONFIG`), or against a `kelp server` it starts itself; prints a line per test and
//! `N passed, N failed`, writes JUnit XML, and ends with a JSON line.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};

#[derive(Parser)]
#[command(about = "Kubernetes conformance tests by upstream codename")]
struct Args {
    /// The cluster to test; without it (and without $KUBECONFIG) a `kelp server` is started.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The kelp binary to start (default: `kelp` beside this binary).
    #[arg(long)]
    kelp: Option<PathBuf>,
    /// Run only the tests whose codename matches this regular expression.
    #[arg(long)]
    focus: Option<String>,
    /// The kubectl binary the kubectl-running tests use (with the cluster's kubeconfig);
    /// without it those tests fail.
    #[arg(long, env = "KELP_CONFORMANCE_KUBECTL")]
    kubectl: Option<PathBuf>,
    /// Run the ported tests Kelp does not pass yet instead of the others.
    #[arg(long)]
    pending: bool,
    /// Where the JUnit XML report goes.
    #[arg(long, default_value = "conformance-junit.xml")]
    junit: PathBuf,
}

/// A `kelp server` on a temporary data dir, stopped when dropped.
struct Started {
    child: Child,
    nodes: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(n) = self.nodes.as_mut() {
            let _ = n.kill();
            let _ = n.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_kelp(binary: Option<PathBuf>) -> anyhow::Result<(Started, PathBuf)> {
    let binary = match binary {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("kelp"),
    };
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(&binary)
        .args(["server", "--https-listen-port", "0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut started = Started {
        child,
        nodes: None,
        _dir: dir,
    };
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(path) = line.strip_prefix("kelp: kubeconfig written to ") {
            // The workload tests need nodes: simulated ones.
            started.nodes = Some(
                Command::new(&binary)
                    .args(["simulate", "--nodes", "2", "--kubeconfig", path])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting kelp simulate")?,
            );
            std::thread::sleep(std::time::Duration::from_secs(2));
            return Ok((started, PathBuf::from(path)));
        }
    }
    bail!("kelp server exited before it was ready")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (_server, kubeconfig) = match args.kubeconfig {
        Some(k) => (None, k),
        None => {
            let (server, k) = start_kelp(args.kelp)?;
            (Some(server), k)
        }
    };
    let mut config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    // As client-go: a 429 without Retry-After (a PDB refusing an eviction) is an answer.
    config.default_retry = false;
    let client = kube::Client::try_from(config)?;
    let focus = args.focus.as_deref().map(regex::Regex::new).transpose()?;
    let options = kelp_conformance::Options {
        kubectl: args.kubectl.map(|binary| kelp_conformance::Kubectl {
            binary,
            kubeconfig: Some(kubeconfig.clone()),
        }),
        pending: args.pending,
    };
    let report = kelp_conformance::run_with(client, focus.as_ref(), options).await;
    print!("{}", report.summary());
    std::fs::write(&args.junit, report.junit())
        .with_context(|| format!("writing {}", args.junit.display()))?;
    println!("{}", report.json());
    if report.failed() > 0 {
        std::process::exit(1);
    }
    Ok(())
}
