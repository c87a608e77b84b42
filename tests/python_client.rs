//! The official Python client against `kelp server` (tests/python/client_test.py). It needs
//! the `kubernetes` package from PyPI, which .ci/run installs; its absence fails the test.

mod support;

use std::process::Command;

use support::KelpServer;

#[test]
fn the_python_client_works_against_kelp() {
    let check = Command::new("python3")
        .args(["-c", "import kubernetes"])
        .output()
        .expect("python3");
    assert!(
        check.status.success(),
        "the Python kubernetes client is missing (pip install kubernetes): {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let server = KelpServer::start(dir.path(), &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_test.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&server.kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "python client: ok\n");
}
