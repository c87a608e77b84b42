//! `kelp server` as a newcomer runs it: it creates the data dir and the SQLite datastore,
//! reports readiness, stops cleanly on SIGTERM, and refuses a bad datastore URL clearly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn kelp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kelp"))
}

#[test]
fn server_opens_the_default_sqlite_datastore_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for start in 0..2 {
        let mut child = kelp()
            .args(["server", "--data-dir"])
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().unwrap().unwrap();
        assert!(
            ready.contains("state.db ready (revision 0"),
            "start {start}: {ready}"
        );
        assert!(data.join("state.db").exists());
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        assert_eq!(
            rest.last().map(String::as_str),
            Some("kelp: stopped"),
            "{rest:?}"
        );
        assert!(child.wait().unwrap().success());
    }
}

#[test]
fn server_refuses_an_unknown_datastore_url() {
    let dir = tempfile::tempdir().unwrap();
    let out = kelp()
        .args(["server", "--data-dir"])
        .arg(dir.path())
        .args(["--datastore-endpoint", "mysql://root:hunter2@db/kelp"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid datastore endpoint") && err.contains("root:***@db"),
        "{err}"
    );
    assert!(!err.contains("hunter2"));
}
