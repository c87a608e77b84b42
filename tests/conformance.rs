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
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&server.kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let focus = std::env::var("KELP_CONFORMANCE_FOCUS")
        .ok()
        .map(|f| regex::Regex::new(&f).unwrap());
    let report = kelp_conformance::run(client, focus.as_ref()).await;
    let junit = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-junit.xml");
    std::fs::write(&junit, report.junit()).unwrap();
    println!("{}", report.summary());
    println!("{}", report.json());
    assert!(report.total() >= 30, "only {} tests ran", report.total());
    assert_eq!(report.failed(), 0, "{}", report.summary());
}
