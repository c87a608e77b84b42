//! The ported conformance suite (`kelp-conformance`) against `kelp server`: every ported test
//! passes. The JUnit report lands in the test's target temp dir.

mod support;

use kube::config::{KubeConfigOptions, Kubeconfig};
use support::KelpServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ported_conformance_tests_pass_against_kelp() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(dir.path(), &[]);
    // Nodes for the workload tests: kelp simulate's.
    let mut nodes = std::process::Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["simulate", "--nodes", "2", "--kubeconfig"])
        .arg(&server.kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server
        .kubectl("1.33", &["get", "nodes", "--no-headers"])
        .stdout
        .lines()
        .filter(|l| l.contains(" Ready "))
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "no simulated nodes");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mut config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&server.kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    // As client-go: a 429 without Retry-After (a PDB refusing an eviction) is an answer.
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let focus = std::env::var("KELP_CONFORMANCE_FOCUS")
        .ok()
        .map(|f| regex::Regex::new(&f).unwrap());
    // The kubectl-running tests (CustomResourcePublishOpenAPI) use kubectl 1.33 with the
    // server's admin kubeconfig.
    let options = kelp_conformance::Options {
        kubectl: Some(kelp_conformance::Kubectl {
            binary: support::kubectl_dir().join("kubectl.1.33"),
            kubeconfig: Some(server.kubeconfig.clone()),
        }),
        pending: false,
    };
    let report = kelp_conformance::run_with(client, focus.as_ref(), options).await;
    let junit = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-junit.xml");
    std::fs::write(&junit, report.junit()).unwrap();
    println!("{}", report.summary());
    println!("{}", report.json());
    assert!(report.total() >= 30, "only {} tests ran", report.total());
    let _ = nodes.kill();
    let _ = nodes.wait();
    assert_eq!(report.failed(), 0, "{}", report.summary());
}
