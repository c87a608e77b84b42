//! A throwaway PostgreSQL cluster for tests: the server binaries of Debian's postgresql
//! package, a data directory in a temp dir, a free port on 127.0.0.1, stopped on drop.
//! `initdb` runs once per machine into a template that each cluster copies.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists() && p.join("initdb").exists())
        .collect();
    found.sort();
    match found.pop() {
        Some(p) => p,
        None => panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: \
             install Debian's postgresql package (.ci/run does)"
        ),
    }
}

unsafe extern "C" {
    safe fn geteuid() -> u32;
}

fn is_root() -> bool {
    geteuid() == 0
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root (initdb and postgres
/// refuse to run as root).
fn pg_command(bin: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn chown_to_postgres(path: &Path) {
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .map(|s| s.success());
        assert!(
            matches!(ok, Ok(true)),
            "chown {} to postgres failed",
            path.display()
        );
    }
}

fn template() -> PathBuf {
    let bin = bin_dir();
    let version = bin
        .parent()
        .and_then(|p| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let template = std::env::temp_dir().join(format!("kelp-pg-template-{version}"));
    if template.join("PG_VERSION").exists() {
        return template;
    }
    let staging =
        std::env::temp_dir().join(format!("kelp-pg-template-{version}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).expect("create initdb dir");
    chown_to_postgres(&staging);
    let out = pg_command(&bin.join("initdb"))
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-instructions",
            "-D",
        ])
        .arg(&staging)
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another test process may have won the race; either template is fine.
    if std::fs::rename(&staging, &template).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    template
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let template = template();
        let dir = tempfile::Builder::new()
            .prefix("kelp-pg-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        let ok = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .status()
            .map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "copy PostgreSQL template");
        chown_to_postgres(dir.path());
        let mut cluster = PgCluster {
            dir,
            port: 0,
            child: None,
        };
        cluster.run_server(free_port());
        cluster
    }

    fn run_server(&mut self, port: u16) {
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).expect("log file");
        let child = pg_command(&bin_dir().join("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
            ])
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        self.port = port;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin_dir().join("pg_isready"))
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let log = std::fs::read_to_string(self.dir.path().join("postgres.log"))
                    .unwrap_or_default();
                panic!("postgres exited with {status}: {log}");
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not become ready on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (as a crash would) without removing its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT to the postmaster (not to runuser, which does not pass it on):
            // immediate shutdown, as in a crash.
            let pid_file = self.dir.path().join("data/postmaster.pid");
            let pid = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|s| s.lines().next().map(str::to_string));
            let pid = pid.unwrap_or_else(|| child.id().to_string());
            let _ = Command::new("kill").args(["-QUIT", &pid]).status();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        self.run_server(port);
    }

    /// Terminates every client connection, as a network cut or a server failover would.
    pub fn terminate_connections(&self) {
        let out = Command::new(bin_dir().join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres", "-Atc"])
            .arg("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'")
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "terminate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
