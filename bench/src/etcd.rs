//! A single-member etcd started on loopback in a temp dir (fsync on, as by default), the peer
//! Kelp's storage is measured against.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub struct Etcd {
    child: Child,
    pub endpoint: String,
    pub version: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Etcd {
    pub async fn start() -> anyhow::Result<Etcd> {
        let version = Command::new("etcd").arg("--version").output().context(
            "etcd not found: install Debian's etcd-server (apt-get install etcd-server)",
        )?;
        let version = String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let dir = tempfile::Builder::new()
            .prefix("kelp-bench-etcd-")
            .tempdir()?;
        let (client, peer) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args([
                "--initial-cluster",
                &format!("bench={peer_url}"),
                "--quota-backend-bytes",
                "8589934592",
            ])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start etcd")?;
        let mut etcd = Etcd {
            child,
            endpoint: format!("127.0.0.1:{client}"),
            version,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = etcd_client::Client::connect([etcd.endpoint.as_str()], None).await
                && c.status().await.is_ok()
            {
                return Ok(etcd);
            }
            if let Ok(Some(status)) = etcd.child.try_wait() {
                bail!("etcd exited with {status}");
            }
            if Instant::now() > deadline {
                bail!("etcd did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
