//! `kelp`: the one binary. Subcommands parse flags and wire the crates together; no logic
//! lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    /// Run the control plane. For now it opens (creating and migrating) the datastore and
    /// keeps its compactor and lease reaper running; the API server arrives next.
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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let endpoint = match &args.datastore_endpoint {
        Some(url) => Endpoint::parse(url)?,
        None => Endpoint::default_for(&args.data_dir),
    };
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", args.data_dir.display()))?;
    let backend = Backend::open(&endpoint, Options::default()).await?;
    let (head, compact) = backend.revisions().await?;
    println!(
        "kelp: datastore {} ready (revision {head}, compacted to {compact})",
        backend.endpoint()
    );
    println!("kelp: the API server is not built yet; press Ctrl-C to stop");
    shutdown_signal().await;
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
