//! `kelp`: the one binary. Subcommands parse flags and wire the crates together; no logic
//! lives here.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kelp_auth::Pki;
use kelp_storage::{Backend, Endpoint, Options};

/// jemalloc rather than glibc's malloc: the control plane allocates on every request and
/// event from many threads, where glibc's arenas spent a quarter of the server's CPU (the
/// churn benchmark's profile) and fragment.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options: a background thread returns freed pages to the system once they have
/// been unused for a second (jemalloc's default keeps them ten), rather than only when some
/// thread next allocates: a burst of work (10,000 pods created) leaves less behind.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

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
    /// Print a kubeconfig with a new client certificate (signed by the cluster CA) for a user.
    Kubeconfig(KubeconfigArgs),
    /// Run the controller-manager alone, against the API server of a kubeconfig.
    ControllerManager(ControllerManagerArgs),
    /// Run the scheduler alone, against the API server of a kubeconfig.
    Scheduler(SchedulerArgs),
    /// Run simulated nodes (kwok-style): registered, heartbeating, their pods driven to
    /// Running (or Succeeded/Failed) without containers.
    Simulate(SimulateArgs),
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Kubeconfig of an identity that may write nodes, leases and pod status (e.g. admin).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Node names are this prefix and an index.
    #[arg(long, default_value = "kelp-sim-")]
    node_prefix: String,
    /// CPU capacity of each node.
    #[arg(long, default_value = "32")]
    cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "256Gi")]
    memory: String,
    /// How many pods each node takes.
    #[arg(long, default_value = "110")]
    max_pods: String,
    /// A label every node carries, KEY=VALUE; repeatable.
    #[arg(long = "node-label", value_parser = parse_label)]
    node_labels: Vec<(String, String)>,
    /// A taint every node carries, KEY[=VALUE]:EFFECT; repeatable.
    #[arg(long = "node-taint", value_parser = parse_taint)]
    node_taints: Vec<k8s_openapi::api::core::v1::Taint>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn parse_taint(s: &str) -> Result<k8s_openapi::api::core::v1::Taint, String> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not KEY[=VALUE]:EFFECT"))?;
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Err(format!("unknown taint effect {effect:?}"));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    Ok(k8s_openapi::api::core::v1::Taint {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
        time_added: None,
    })
}

#[derive(clap::Args)]
struct ControllerManagerArgs {
    /// Kubeconfig of the controller-manager's identity (system:kube-controller-manager).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// CA bundle published to every namespace as kube-root-ca.crt (default: the kubeconfig's CA).
    #[arg(long)]
    root_ca_file: Option<PathBuf>,
    /// The CA certificate that signs approved CertificateSigningRequests (with the key below).
    #[arg(long, requires = "cluster_signing_key_file")]
    cluster_signing_cert_file: Option<PathBuf>,
    /// The CA key that signs approved CertificateSigningRequests.
    #[arg(long, requires = "cluster_signing_cert_file")]
    cluster_signing_key_file: Option<PathBuf>,
    /// The service-account signing key (the server's `<data-dir>/pki/sa.key`): with it, secrets
    /// of type kubernetes.io/service-account-token are filled with tokens.
    #[arg(long)]
    service_account_private_key_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SchedulerArgs {
    /// Kubeconfig of the scheduler's identity (system:kube-scheduler).
    #[arg(long)]
    kubeconfig: PathBuf,
}

#[derive(clap::Args)]
struct KubeconfigArgs {
    /// The server's data directory (its CA signs the certificate).
    #[arg(long, default_value = "./kelp-data", env = "KELP_DATA_DIR")]
    data_dir: PathBuf,
    /// The user name (the certificate's common name).
    #[arg(long)]
    user: String,
    /// Groups of the user (the certificate's organizations); repeatable.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// The API server's URL (default: the one in the data dir's admin kubeconfig).
    #[arg(long)]
    server: Option<String>,
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
    /// Static bearer tokens: CSV lines `token,user,uid[,"group1,group2"]`.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// An audit Policy: which requests the audit log records, at which level.
    #[arg(long, requires = "audit_log_path")]
    audit_policy_file: Option<PathBuf>,
    /// Where audit events go, as JSON lines (`-`: standard output).
    #[arg(long, requires = "audit_policy_file")]
    audit_log_path: Option<PathBuf>,
    /// An EncryptionConfiguration: which resources are encrypted at rest, with which keys.
    #[arg(long)]
    encryption_provider_config: Option<PathBuf>,
    /// The issuer (`iss`) of service-account tokens, also their default audience.
    #[arg(long, default_value = kelp_auth::serviceaccount::DEFAULT_ISSUER)]
    service_account_issuer: String,
    /// Do not run the controller-manager in this process.
    #[arg(long)]
    disable_controller_manager: bool,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    disable_scheduler: bool,
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
        Command::Kubeconfig(args) => kubeconfig(args),
        Command::ControllerManager(args) => runtime.block_on(controller_manager(args)),
        Command::Scheduler(args) => runtime.block_on(scheduler(args)),
        Command::Simulate(args) => runtime.block_on(simulate(args)),
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

/// A component's kubeconfig (`DIR/<file>.kubeconfig`, credentials in `DIR/pki/<file>.*`),
/// written on first start and kept afterwards (with the server URL brought up to date).
fn component_kubeconfig(
    pki: &Pki,
    data_dir: &Path,
    server_url: &str,
    file: &str,
    user: &str,
    groups: &[&str],
) -> anyhow::Result<PathBuf> {
    let path = data_dir.join(format!("{file}.kubeconfig"));
    let creds_dir = data_dir.join("pki");
    let (cert, key) = (
        creds_dir.join(format!("{file}.crt")),
        creds_dir.join(format!("{file}.key")),
    );
    let creds = match (
        std::fs::read_to_string(&cert),
        std::fs::read_to_string(&key),
    ) {
        (Ok(cert_pem), Ok(key_pem)) => kelp_auth::Credentials { cert_pem, key_pem },
        _ => {
            let creds = pki.client(user, groups)?;
            std::fs::write(&key, &creds.key_pem).with_context(|| key.display().to_string())?;
            std::fs::write(&cert, &creds.cert_pem).with_context(|| cert.display().to_string())?;
            creds
        }
    };
    let config = kelp_auth::kubeconfig(server_url, pki.ca_pem(), file, &creds);
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
    let front_proxy_ca = pki.front_proxy()?;
    let front_proxy = kelp_apiserver::FrontProxy {
        ca_pem: front_proxy_ca.ca_pem().to_string(),
        client: front_proxy_ca.client("front-proxy-client", &[])?,
    };

    let token_file = match &args.token_auth_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Some(
                kelp_auth::TokenFile::parse(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let service_accounts = kelp_auth::serviceaccount::ServiceAccountKeys::load_or_create(
        &args.data_dir,
        &args.service_account_issuer,
    )?;
    let service_account_key_pem = service_accounts.private_pem.clone();
    let mut options = Options::default();
    if let Some(path) = &args.encryption_provider_config {
        options.transformer = Some(
            kelp_apiserver::encryption::Encryption::from_file(path)
                .map_err(|e| anyhow::anyhow!("--encryption-provider-config: {e}"))?,
        );
    }
    let backend = Backend::open(&endpoint, options).await?;
    let audit = match (&args.audit_policy_file, &args.audit_log_path) {
        (Some(policy), Some(log)) => Some(std::sync::Arc::new(
            kelp_apiserver::audit::Audit::open(policy, log)
                .map_err(|e| anyhow::anyhow!("audit: {e}"))?,
        )),
        _ => None,
    };
    let config = kelp_apiserver::Config {
        front_proxy: Some(front_proxy),
        audit,
        token_file,
        service_accounts: std::sync::Arc::new(service_accounts),
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
    let kubeconfig = component_kubeconfig(
        &pki,
        &args.data_dir,
        &url,
        "admin",
        "system:admin",
        &["system:masters"],
    )?;
    // The control loops connect back over HTTPS with their own identities, as they do alone.
    if !args.disable_controller_manager {
        let path = component_kubeconfig(
            &pki,
            &args.data_dir,
            &url,
            "controller-manager",
            "system:kube-controller-manager",
            &[],
        )?;
        let options = kelp_controllers::Options {
            config: kelp_client::config_from_file(&path).await?,
            root_ca_pem: pki.ca_pem().to_string(),
            identity: kelp_client::identity(),
            signing: Some(kelp_controllers::certificates::SigningCa {
                cert_pem: pki.ca_pem().to_string(),
                key_pem: read_file(&args.data_dir.join("pki").join("ca.key"))?,
            }),
            service_account_key_pem: Some(service_account_key_pem),
        };
        tokio::spawn(async move {
            if let Err(e) = kelp_controllers::run(options).await {
                tracing::error!(error = %e, "controller-manager stopped");
            }
        });
    }
    if !args.disable_scheduler {
        let path = component_kubeconfig(
            &pki,
            &args.data_dir,
            &url,
            "scheduler",
            "system:kube-scheduler",
            &[],
        )?;
        let options = kelp_scheduler::Options {
            config: kelp_client::config_from_file(&path).await?,
            identity: kelp_client::identity(),
        };
        tokio::spawn(async move {
            if let Err(e) = kelp_scheduler::run(options).await {
                tracing::error!(error = %e, "scheduler stopped");
            }
        });
    }
    // What the server says on stdout is for whoever started it; a reader that went away
    // (a closed pipe) must not stop the server.
    let say = |line: String| {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{line}");
    };
    say(format!(
        "kelp: API server ready at {url} (datastore {})",
        backend.endpoint()
    ));
    say(format!(
        "kelp: kubeconfig written to {}",
        kubeconfig.display()
    ));
    say(format!(
        "kelp: try: kubectl --kubeconfig {} get namespaces",
        kubeconfig.display()
    ));
    shutdown_signal().await;
    server.stop().await;
    backend.close().await;
    say("kelp: stopped".to_string());
    Ok(())
}

/// `kelp kubeconfig`: a kubeconfig for a new user, printed.
fn kubeconfig(args: KubeconfigArgs) -> anyhow::Result<()> {
    if !args.data_dir.join("pki").join("ca.key").exists() {
        anyhow::bail!(
            "no cluster CA in {} (start `kelp server --data-dir {}` first)",
            args.data_dir.display(),
            args.data_dir.display()
        );
    }
    let pki = Pki::load_or_create(&args.data_dir)?;
    let server = match args.server {
        Some(s) => s,
        None => {
            let admin = args.data_dir.join("admin.kubeconfig");
            let text = std::fs::read_to_string(&admin)
                .with_context(|| format!("cannot read {} (or pass --server)", admin.display()))?;
            text.lines()
                .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_string))
                .with_context(|| format!("no server in {}", admin.display()))?
        }
    };
    let groups: Vec<&str> = args.groups.iter().map(String::as_str).collect();
    let creds = pki.client(&args.user, &groups)?;
    print!(
        "{}",
        kelp_auth::kubeconfig(&server, pki.ca_pem(), &args.user, &creds)
    );
    Ok(())
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `kelp controller-manager`: the controllers alone, until a signal.
async fn controller_manager(args: ControllerManagerArgs) -> anyhow::Result<()> {
    let config = kelp_client::config_from_file(&args.kubeconfig).await?;
    let root_ca_pem = match &args.root_ca_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => pem_bundle(&config.root_cert.clone().unwrap_or_default()),
    };
    let signing = match (
        &args.cluster_signing_cert_file,
        &args.cluster_signing_key_file,
    ) {
        (Some(cert), Some(key)) => Some(kelp_controllers::certificates::SigningCa {
            cert_pem: read_file(cert)?,
            key_pem: read_file(key)?,
        }),
        _ => None,
    };
    let service_account_key_pem = match &args.service_account_private_key_file {
        Some(path) => Some(read_file(path)?),
        None => None,
    };
    let options = kelp_controllers::Options {
        config,
        root_ca_pem,
        identity: kelp_client::identity(),
        signing,
        service_account_key_pem,
    };
    tokio::select! {
        r = kelp_controllers::run(options) => r,
        _ = shutdown_signal() => Ok(()),
    }
}

/// `kelp scheduler`: the scheduler alone, until a signal.
async fn scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    let options = kelp_scheduler::Options {
        config: kelp_client::config_from_file(&args.kubeconfig).await?,
        identity: kelp_client::identity(),
    };
    tokio::select! {
        r = kelp_scheduler::run(options) => r,
        _ = shutdown_signal() => Ok(()),
    }
}

/// `kelp simulate`: simulated nodes, until a signal.
async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let mut config = kelp_client::config_from_file(&args.kubeconfig).await?;
    kelp_client::configure(&mut config, "kelp-simulate");
    let client = kube::Client::try_from(config)?;
    let options = kelp_kubelet::simulate::Options {
        nodes: args.nodes,
        prefix: args.node_prefix,
        capacity: kelp_kubelet::node::Capacity {
            cpu: args.cpu,
            memory: args.memory,
            pods: args.max_pods,
        },
        labels: args.node_labels.into_iter().collect(),
        taints: args.node_taints,
    };
    tokio::select! {
        r = kelp_kubelet::simulate::run(client, options) => r,
        _ = shutdown_signal() => Ok(()),
    }
}

/// DER certificates as a PEM bundle.
fn pem_bundle(ders: &[Vec<u8>]) -> String {
    use base64::Engine;
    let mut out = String::new();
    for der in ders {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
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
