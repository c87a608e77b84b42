//! Kelp's benchmarks. Each suite runs Kelp and a real peer in the same invocation on the same
//! machine, and reports ratios, since absolute numbers on shared machines are noisy.
//! Results are recorded in BENCHMARKS.md with the command, machine shape and date.

mod api;
mod control;
mod etcd;
mod stats;
mod storage;

use clap::{Parser, Subcommand};

/// The allocator `kelp` runs with, so the storage layer measured in process here allocates as
/// it does in the API server it is compared with.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "kelp-bench")]
struct Cli {
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Subcommand)]
enum Suite {
    /// kelp-storage on SQLite and PostgreSQL against a single-member etcd: creates, CAS
    /// updates, gets, lists of 500 of 10k keys, and watch delivery to 100 watchers, at 1, 16
    /// and 64 concurrent clients.
    Storage(storage::Args),
    /// `kelp server` over HTTPS: ready time, idle RSS, creates and gets at 64 clients
    /// (against the storage layer's creates in the same run), lists of 10k pods.
    Api(api::Args),
    /// The scheduler: 10,000 pods onto 5,000 and onto 500 nodes registered through the API,
    /// pods/s from creation to bound.
    Scheduler(control::SchedulerArgs),
    /// Deployments scaled up and down on simulated nodes: pod changes/s and API latency
    /// meanwhile, then the server's RSS with 10,000 pods.
    Churn(control::ChurnArgs),
    /// Holds idle watches open against a running server, for profiling its memory.
    Watches(api::WatchesArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().suite {
        Suite::Storage(args) => storage::run(args).await,
        Suite::Api(args) => api::run(args).await,
        Suite::Scheduler(args) => control::scheduler(args).await,
        Suite::Churn(args) => control::churn(args).await,
        Suite::Watches(args) => api::hold_watches(args).await,
    }
}
