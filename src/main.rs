//! `kelp`: the one binary. Subcommands parse flags and wire the crates together; no logic
//! lives here.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kelp_auth::Pki;
use kelp_storage::{Backend, Endpoint, Options};

#[derive(Parser)]
#[command(
    name = "kelp",
    version,
    about = "A Kubernetes control plane whose cluster state lives in SQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: the API server over HTTPS on the datastore.
    Server(ServerArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Directory for the state database, certificates and kubeconfigs.
    #[arg(long, default_value = "./kelp-data", env = "KELP_DATA_DIR")]
    data_dir: PathBuf,
    /// Datastore URL: sqlite://PATH (default <data-dir>/state.db) or postgres://USER@HOST/DB.
    #[arg(long, env = "KELP_DATASTORE_ENDPOINT")]
    datastore_endpoint: Option<String>,
    /// Address the API server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// HTTPS port of the API server (0: any free port).
    #[arg(long, default_value_t = 6443)]
    https_listen_port: u16,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // One crypto provider for every TLS user in the process (rustls panics on two).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kelp: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Server(args) => runtime.block_on(server(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kelp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(h.trim().to_string()).filter(|h| !h.is_empty())
}

/// The admin kubeconfig, written on first start and kept afterwards (with the server URL
/// brought up to date).
fn admin_kubeconfig(pki: &Pki, data_dir: &Path, server_url: &str) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("admin.kubeconfig");
    let creds_dir = data_dir.join("pki");
    let (cert, key) = (creds_dir.join("admin.crt"), creds_dir.join("admin.key"));
    let creds = match (
        std::fs::read_to_string(&cert),
        std::fs::read_to_string(&key),
    ) {
        (Ok(cert_pem), Ok(key_pem)) => kelp_auth::Credentials { cert_pem, key_pem },
        _ => {
            let creds = pki.client("system:admin", &["system:masters"])?;
            std::fs::write(&key, &creds.key_pem).with_context(|| key.display().to_string())?;
            std::fs::write(&cert, &creds.cert_pem).with_context(|| cert.display().to_string())?;
            creds
        }
    };
    let config = kelp_auth::kubeconfig(server_url, pki.ca_pem(), "admin", &creds);
    std::fs::write(&path, config).with_context(|| path.display().to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let endpoint = match &args.datastore_endpoint {
        Some(url) => Endpoint::parse(url)?,
        None => Endpoint::default_for(&args.data_dir),
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data dir {}", args.data_dir.display()))?;
    let pki = Pki::load_or_create(&args.data_dir)?;
    let loopback: IpAddr = "127.0.0.1".parse()?;
    let mut dns = vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
    ];
    dns.extend(hostname());
    let mut ips = vec![loopback];
    if !args.bind_address.is_unspecified() {
        ips.push(args.bind_address);
    }
    let serving = pki.serving(&dns, &ips)?;

    let backend = Backend::open(&endpoint, Options::default()).await?;
    let config = kelp_apiserver::Config {
        listen: SocketAddr::new(args.bind_address, args.https_listen_port),
        serving_cert_pem: serving.cert_pem,
        serving_key_pem: serving.key_pem,
        client_ca_pem: pki.ca_pem().to_string(),
    };
    let server = kelp_apiserver::start(config, backend.clone()).await?;
    let host = if args.bind_address.is_unspecified() {
        loopback
    } else {
        args.bind_address
    };
    let url = format!(
        "https://{}",
        SocketAddr::new(host, server.local_addr.port())
    );
    let kubeconfig = admin_kubeconfig(&pki, &args.data_dir, &url)?;
    println!(
        "kelp: API server ready at {url} (datastore {})",
        backend.endpoint()
    );
    println!("kelp: kubeconfig written to {}", kubeconfig.display());
    println!(
        "kelp: try: kubectl --kubeconfig {} get namespaces",
        kubeconfig.display()
    );
    shutdown_signal().await;
    server.stop().await;
    backend.close().await;
    println!("kelp: stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
