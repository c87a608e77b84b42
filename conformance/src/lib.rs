//! kelp-conformance: behaviour tests ported from upstream Kubernetes' conformance suite, each
//! named by its upstream codename, run against a live cluster through kube-rs — any cluster:
//! Kelp, or an upstream one, which is how a port is checked against the original.
//!
//! Like upstream's e2e framework, every test gets a fresh namespace, removed afterwards, and
//! the run ends in a report: passed, failed and total, and a JUnit XML file.

pub mod framework;
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

pub use framework::{Ctx, Kubectl};

/// One ported test.
pub struct Test {
    /// Upstream's codename, `[sig-...] Describe ... It ...`, without the `[Conformance]` tag.
    pub name: &'static str,
    pub run: fn(Ctx) -> BoxFuture<'static, anyhow::Result<()>>,
    /// It spends its time waiting on the wall clock (a cron schedule's next minute, a window
    /// of observation), touching nothing outside its namespace: it runs beside the others
    /// instead of in line.
    pub clocked: bool,
}

/// Every ported test, in upstream's area order.
pub fn all() -> Vec<Test> {
    tests::all()
}

/// Ported tests Kelp does not pass yet; not part of [`all`], run with `--pending`.
pub fn pending() -> Vec<Test> {
    tests::pending()
}

/// How one test went.
pub struct Outcome {
    pub name: &'static str,
    pub error: Option<String>,
    pub duration: Duration,
}

/// One test, in its own namespace and within [`TEST_TIMEOUT`].
async fn timed(
    client: &kube::Client,
    test: &Test,
    kubectl: Option<Arc<framework::KubectlEnv>>,
) -> Outcome {
    let t0 = Instant::now();
    let result =
        tokio::time::timeout(TEST_TIMEOUT, framework::run_one(client, test, kubectl)).await;
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(_) => Some(format!("timed out after {}s", TEST_TIMEOUT.as_secs())),
    };
    Outcome {
        name: test.name,
        error,
        duration: t0.elapsed(),
    }
}

/// What a run found.
pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub duration: Duration,
}

/// How long one test may take, setup and teardown included.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// What a run may be given besides its client.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The kubectl the kubectl-running tests use; without it they fail.
    pub kubectl: Option<Kubectl>,
    /// Run the [`pending`] tests instead of [`all`].
    pub pending: bool,
}

impl Options {
    /// From the environment: the kubectl of `$KELP_CONFORMANCE_KUBECTL` (see
    /// [`Kubectl::from_env`]).
    pub fn from_env() -> Options {
        Options {
            kubectl: Kubectl::from_env(),
            pending: false,
        }
    }
}

/// Runs the tests whose names match `focus` (all when None), one after another (the
/// [`Test::clocked`] ones beside them), with the options of the environment
/// ([`Options::from_env`]).
pub async fn run(client: kube::Client, focus: Option<&regex::Regex>) -> Report {
    run_with(client, focus, Options::from_env()).await
}

/// [`run`] with these options.
pub async fn run_with(
    client: kube::Client,
    focus: Option<&regex::Regex>,
    options: Options,
) -> Report {
    let kubectl = options
        .kubectl
        .map(|k| Arc::new(framework::KubectlEnv::new(k)));
    let started = Instant::now();
    let tests: Vec<Test> = if options.pending { pending() } else { all() }
        .into_iter()
        .filter(|t| focus.is_none_or(|f| f.is_match(t.name)))
        .collect();
    let beside = futures::future::join_all(
        tests
            .iter()
            .filter(|t| t.clocked)
            .map(|t| timed(&client, t, kubectl.clone())),
    );
    let in_line = async {
        let mut outcomes = Vec::new();
        for test in tests.iter().filter(|t| !t.clocked) {
            outcomes.push(timed(&client, test, kubectl.clone()).await);
        }
        outcomes
    };
    let (beside, in_line) = tokio::join!(beside, in_line);
    // Reported in the tests' order.
    let mut outcomes: Vec<Outcome> = in_line.into_iter().chain(beside).collect();
    let order = |name: &str| tests.iter().position(|t| t.name == name);
    outcomes.sort_by_key(|o| order(o.name));
    Report {
        outcomes,
        duration: started.elapsed(),
    }
}

impl Report {
    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.error.is_none()).count()
    }

    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.passed()
    }

    pub fn total(&self) -> usize {
        self.outcomes.len()
    }

    /// One line per test, then `N passed, N failed`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for o in &self.outcomes {
            match &o.error {
                None => out.push_str(&format!(
                    "PASS {} ({:.2}s)\n",
                    o.name,
                    o.duration.as_secs_f64()
                )),
                Some(e) => out.push_str(&format!("FAIL {}: {e}\n", o.name)),
            }
        }
        out.push_str(&format!(
            "conformance: {} passed, {} failed\n",
            self.passed(),
            self.failed()
        ));
        out
    }

    /// The report as JUnit XML (what CI dashboards and upstream's e2e runs produce).
    pub fn junit(&self) -> String {
        use quick_junit::{NonSuccessKind, Report as Junit, TestCase, TestCaseStatus, TestSuite};
        let mut suite = TestSuite::new("kelp-conformance");
        for o in &self.outcomes {
            let status = match &o.error {
                None => TestCaseStatus::success(),
                Some(e) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(e.clone());
                    s
                }
            };
            let mut case = TestCase::new(o.name, status);
            case.set_time(o.duration);
            suite.add_test_case(case);
        }
        suite.set_time(self.duration);
        let mut report = Junit::new("kelp-conformance");
        report.add_test_suite(suite);
        report.set_time(self.duration);
        report.to_string().unwrap_or_default()
    }

    /// `{"suite":"conformance","passed":…,"failed":…,"total":…}`
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "suite": "conformance",
            "passed": self.passed(),
            "failed": self.failed(),
            "total": self.total(),
        })
    }
}
