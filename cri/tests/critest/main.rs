//! What critest (cri-tools' validation suite, the conformance test Kubernetes runs against a
//! container runtime) checks, written again here against berthd: critest itself cannot be
//! built on this machine (it is not packaged for Debian and needs Go modules from the
//! internet). Each check below is one critest spec, named as critest names it, making the same
//! CRI calls with the same fields and asserting what the spec asserts, including what critest's
//! CRI client library checks of every answer (see `Cri`). Where critest needs something this
//! machine does not have, the nearest equivalent is used and said so at that spec: the images
//! are the fixture registry's busybox and nginx, or images built from them here (`Images`); a
//! command busybox of Debian lacks (`ipcs`, `pgrep`) is replaced by what it has.
//!
//! A test runs its specs one after another and reports every failing one, as critest does,
//! then fails if any did. Specs critest skips on a runtime like berth (SELinux on a host
//! without it, user namespaces, metrics, cgroup mount mode, image volumes, the newest streaming
//! list calls) are listed in docs/compat.md, not here. Its AppArmor specs are here
//! (`critest_apparmor`); on this machine, whose kernel has no AppArmor, scripts/apparmor-vm.sh
//! runs them in a VM.
//!
//! Each test below runs one area's specs, in a module of its own named after critest's file
//! (pods, containers, security_context, images, streaming, apparmor); what the specs share is
//! in `framework` (critest's framework package: the CRI clients, logs, Eventually), the images
//! built for them in `test_images`.

use berth_tests_support::registry;
use std::future::Future;
use std::time::Duration;

type R = Result<(), String>;

/// `Err` with a message, as critest's `Expect(...)` failing.
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// A gRPC error as text, with what was being done.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T> Ctx<T> for Result<tonic::Response<T>, tonic::Status> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map(|r| r.into_inner())
            .map_err(|s| format!("{what}: {:?}: {}", s.code(), s.message()))
    }
}

/// critest's run: every spec, its failures collected.
struct Suite {
    failed: Vec<String>,
    ran: usize,
}

impl Suite {
    fn new() -> Suite {
        Suite {
            failed: Vec::new(),
            ran: 0,
        }
    }

    /// `f` boxed: the specs' futures side by side would not fit a thread's stack.
    async fn spec(&mut self, name: &str, f: std::pin::Pin<Box<impl Future<Output = R>>>) {
        self.ran += 1;
        // critest's timeouts for one spec are minutes; a spec that hangs fails, not the test.
        match tokio::time::timeout(Duration::from_secs(240), f).await {
            Ok(Ok(())) => eprintln!("ok   [k8s.io] {name}"),
            Ok(Err(e)) => {
                eprintln!("FAIL [k8s.io] {name}: {e}");
                self.failed.push(format!("[k8s.io] {name}: {e}"));
            }
            Err(_) => {
                eprintln!("FAIL [k8s.io] {name}: did not finish in 240 s");
                self.failed
                    .push(format!("[k8s.io] {name}: did not finish in 240 s"));
            }
        }
    }

    fn finish(self) {
        assert!(
            self.failed.is_empty(),
            "{} of {} critest specs failed:\n{}",
            self.failed.len(),
            self.ran,
            self.failed.join("\n")
        );
    }
}

/// A random UUID, as critest names every pod and container with one.
fn uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap()
        .trim()
        .to_string()
}

fn busybox() -> String {
    format!("{}/library/busybox:latest", registry())
}

fn nginx() -> String {
    format!("{}/library/nginx:latest", registry())
}

mod apparmor;
mod containers;
mod framework;
mod images;
mod pods;
mod security_context;
mod streaming;
mod test_images;

/// Runtime info, Idempotence, PodSandbox, Networking, Multiple Containers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_runtime_pods_and_networking() {
    pods::specs().await;
}

/// Container, Container Mount Propagation, Container OOM, Container Mount Readonly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_containers() {
    containers::specs().await;
}

/// Security Context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_security_context() {
    security_context::specs().await;
}

/// Image Manager, Image Consistency, Image Identifier Consistency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_images() {
    images::specs().await;
}

/// Streaming, with the SPDY client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_streaming() {
    streaming::specs().await;
}

/// AppArmor; on a host without it, what berthd refuses and runs instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critest_apparmor() {
    apparmor::specs().await;
}
