//! Pull robustness: a connection that drops mid-blob is resumed (or restarted when the
//! registry ignores ranges), a registry that keeps dropping or answers 401 fails cleanly,
//! progress events, and cleanup of what an interrupted process left on open.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use berth_imagestore::{
    Digest, ProgressEvent, ProgressPhase, ProgressSink, PullOptions, Store, StoreOptions,
};
use common::{FakeRequest, FakeResponse};

async fn open(root: &std::path::Path) -> Store {
    Store::open_with(
        root,
        StoreOptions {
            registry: common::hermetic_config(None),
        },
    )
    .await
    .unwrap()
}

fn assert_clean(root: &std::path::Path) {
    for sub in ["content/ingest", "content/blobs/sha256", "snapshots"] {
        let n = std::fs::read_dir(root.join(sub)).unwrap().count();
        assert_eq!(n, 0, "{sub} not empty");
    }
}

/// How the fake registry serves the layer blob.
#[derive(Clone, Copy, PartialEq)]
enum LayerMode {
    /// First GET sends half and closes; ranges are honoured.
    CutOnceThenRange,
    /// First GET sends half and closes; ranges are ignored (200 with everything).
    CutOnceNoRange,
    /// Every GET sends half and closes.
    AlwaysCut,
    /// 401 for the layer.
    Unauthorized,
}

struct Fake {
    addr: String,
    layer_gets: Arc<AtomicUsize>,
    ranges: Arc<Mutex<Vec<String>>>,
    manifest: Vec<u8>,
}

async fn fake(mode: LayerMode, layer: Vec<u8>, config: Vec<u8>, manifest: Vec<u8>) -> Fake {
    let layer_gets = Arc::new(AtomicUsize::new(0));
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let (lg, rg, m) = (layer_gets.clone(), ranges.clone(), manifest.clone());
    let layer_path = format!("/v2/app/blobs/{}", Digest::of(&layer));
    let config_path = format!("/v2/app/blobs/{}", Digest::of(&config));
    let addr = common::fake_http(move |req: &FakeRequest| {
        let path = req.path.split('?').next().unwrap_or("");
        if path == "/v2/" {
            return FakeResponse::new(200, "application/json", "{}");
        }
        if path == "/v2/app/manifests/v1" {
            return FakeResponse::new(200, "application/vnd.oci.image.manifest.v1+json", m.clone());
        }
        if path == config_path {
            return FakeResponse::new(200, "application/octet-stream", config.clone());
        }
        if path != layer_path {
            return FakeResponse::new(404, "application/json", "{}");
        }
        let n = lg.fetch_add(1, Ordering::SeqCst);
        let range = req.headers.get("range").cloned();
        if let Some(r) = &range {
            rg.lock().unwrap().push(r.clone());
        }
        let half = layer.len() / 2;
        match mode {
            LayerMode::Unauthorized => FakeResponse::new(
                401,
                "application/json",
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            ),
            LayerMode::AlwaysCut => FakeResponse {
                cut_after: Some(half),
                ..FakeResponse::new(200, "application/octet-stream", layer.clone())
            },
            _ if n == 0 => FakeResponse {
                cut_after: Some(half),
                ..FakeResponse::new(200, "application/octet-stream", layer.clone())
            },
            LayerMode::CutOnceThenRange if range.is_some() => {
                let start: usize = range
                    .as_deref()
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                FakeResponse::new(206, "application/octet-stream", layer[start..].to_vec()).header(
                    "Content-Range",
                    &format!("bytes {start}-{}/{}", layer.len() - 1, layer.len()),
                )
            }
            _ => FakeResponse::new(200, "application/octet-stream", layer.clone()),
        }
    })
    .await;
    Fake {
        addr,
        layer_gets,
        ranges,
        manifest,
    }
}

fn big_content() -> Vec<u8> {
    // Incompressible-ish, large enough to arrive in several chunks.
    (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_resumes_with_range() {
    let (layer, config, manifest) = common::tiny_image(&big_content());
    let f = fake(LayerMode::CutOnceThenRange, layer.clone(), config, manifest).await;
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    let img = store
        .pull(&format!("{}/app:v1", f.addr), &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(img.manifest, Digest::of(&f.manifest));
    assert_eq!(f.layer_gets.load(Ordering::SeqCst), 2);
    let ranges = f.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert!(
        ranges[0].starts_with("bytes=") && ranges[0] != "bytes=0-",
        "{ranges:?}"
    );
    let root = store.view_for(&img.name, "v").await.unwrap();
    let fs = std::path::PathBuf::from(&root.source);
    assert_eq!(std::fs::read(fs.join("hello")).unwrap(), big_content());
    assert_eq!(
        std::fs::read_dir(tmp.path().join("content/ingest"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_restarts_when_range_is_ignored() {
    let (layer, config, manifest) = common::tiny_image(&big_content());
    let f = fake(LayerMode::CutOnceNoRange, layer, config, manifest).await;
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    let img = store
        .pull(&format!("{}/app:v1", f.addr), &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(img.manifest, Digest::of(&f.manifest));
    assert_eq!(f.layer_gets.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_that_keeps_dropping_or_refuses_fails_cleanly() {
    for (mode, cause) in [
        (LayerMode::AlwaysCut, "interrupted"),
        (LayerMode::Unauthorized, "authoriz"),
    ] {
        let (layer, config, manifest) = common::tiny_image(&big_content());
        let f = fake(mode, layer, config, manifest).await;
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path()).await;
        let name = format!("{}/app:v1", f.addr);
        let e = store
            .pull(&name, &PullOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n') && e.contains(&name), "{e}");
        assert!(e.to_lowercase().contains(cause), "{e}");
        assert!(store.images().await.unwrap().is_empty());
        assert_clean(tmp.path());
        if mode == LayerMode::AlwaysCut {
            // Attempts are bounded: a few resumes, no endless loop.
            let n = f.layer_gets.load(Ordering::SeqCst);
            assert!((2..=4).contains(&n), "{n} layer requests");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_events_per_layer() {
    let reg = common::registry();
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    let name = format!("{reg}/library/nginx:latest");
    let run = |store: Store, name: String| async move {
        let (sink, mut rx) = ProgressSink::channel();
        let opts = PullOptions {
            progress: Some(sink),
            ..Default::default()
        };
        let img = store.pull(&name, &opts).await.unwrap();
        drop(opts);
        let mut events: Vec<ProgressEvent> = Vec::new();
        while let Some(ev) = rx.recv().await {
            events.push(ev);
        }
        (img, events)
    };
    let (img, events) = run(store.clone(), name.clone()).await;
    for layer in &img.layers {
        let evs: Vec<&ProgressEvent> = events.iter().filter(|e| &e.digest == layer).collect();
        let phases: Vec<ProgressPhase> = evs.iter().map(|e| e.phase).collect();
        assert_eq!(phases.first(), Some(&ProgressPhase::Waiting), "{phases:?}");
        assert_eq!(phases.last(), Some(&ProgressPhase::Done), "{phases:?}");
        assert!(phases.contains(&ProgressPhase::Downloaded), "{phases:?}");
        assert!(phases.contains(&ProgressPhase::Unpacking), "{phases:?}");
        let total = evs[0].total;
        assert!(total > 0);
        let dl: Vec<u64> = evs
            .iter()
            .filter(|e| e.phase == ProgressPhase::Downloading)
            .map(|e| e.done)
            .collect();
        assert!(dl.windows(2).all(|w| w[0] <= w[1]), "{dl:?}");
        assert_eq!(dl.last(), Some(&total));
        assert!(evs.iter().all(|e| e.image == name));
    }
    // Warm: nothing to download, every layer reports Exists then Done.
    let (_, events) = run(store, name).await;
    for layer in &img.layers {
        let phases: Vec<ProgressPhase> = events
            .iter()
            .filter(|e| &e.digest == layer)
            .map(|e| e.phase)
            .collect();
        assert_eq!(
            phases,
            [
                ProgressPhase::Waiting,
                ProgressPhase::Exists,
                ProgressPhase::Done
            ]
        );
    }
}

/// What a killed process leaves (an ingest file, a half-unpacked snapshot directory) is
/// removed when the store is opened again; complete images stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_cleans_up_after_a_crash() {
    let reg = common::registry();
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("{reg}/library/busybox:latest");
    {
        let store = open(tmp.path()).await;
        store.pull(&name, &PullOptions::default()).await.unwrap();
    }
    std::fs::write(tmp.path().join("content/ingest/123-0-0"), b"partial").unwrap();
    std::fs::create_dir_all(tmp.path().join("snapshots/tmp-123-0/fs/usr")).unwrap();
    std::fs::create_dir_all(tmp.path().join("snapshots/999/fs")).unwrap();
    let store = open(tmp.path()).await;
    assert_eq!(
        std::fs::read_dir(tmp.path().join("content/ingest"))
            .unwrap()
            .count(),
        0
    );
    assert!(!tmp.path().join("snapshots/tmp-123-0").exists());
    assert!(!tmp.path().join("snapshots/999").exists());
    let img = store.image(&name).await.unwrap();
    let (_, report) = store
        .pull_with_report(&name, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(report.bytes_downloaded, 0, "warm pull after restart");
    assert_eq!(store.image(&name).await.unwrap().manifest, img.manifest);
}

/// The pull that [`kill_9_during_pull_leaves_the_store_consistent`] runs in a child process
/// (this test binary re-run with `--ignored --exact`). Does nothing when run directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by kill_9_during_pull_leaves_the_store_consistent"]
async fn child_pull() {
    let (Some(root), Some(name)) = (
        std::env::var_os("BERTH_CHILD_ROOT"),
        std::env::var("BERTH_CHILD_REF").ok(),
    ) else {
        return;
    };
    let store = open(std::path::Path::new(&root)).await;
    let _ = store.pull(&name, &PullOptions::default()).await;
}

/// kill -9 of a process in the middle of a blob download: the store it leaves opens clean
/// (no ingest file, no snapshot, no image) and the same pull then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_pull_leaves_the_store_consistent() {
    let (layer, config, manifest) = common::tiny_image(&big_content());
    let stalled = Arc::new(AtomicUsize::new(0));
    let layer_path = format!("/v2/app/blobs/{}", Digest::of(&layer));
    let config_path = format!("/v2/app/blobs/{}", Digest::of(&config));
    let (st, m, l) = (stalled.clone(), manifest.clone(), layer.clone());
    let addr = common::fake_http(move |req: &FakeRequest| {
        let path = req.path.split('?').next().unwrap_or("");
        match path {
            "/v2/" => FakeResponse::new(200, "application/json", "{}"),
            "/v2/app/manifests/v1" => {
                FakeResponse::new(200, "application/vnd.oci.image.manifest.v1+json", m.clone())
            }
            p if p == config_path => {
                FakeResponse::new(200, "application/octet-stream", config.clone())
            }
            // The first layer request stalls after half the bytes; later ones are served.
            p if p == layer_path && st.fetch_add(1, Ordering::SeqCst) == 0 => FakeResponse {
                cut_after: Some(l.len() / 2),
                stall: true,
                ..FakeResponse::new(200, "application/octet-stream", l.clone())
            },
            p if p == layer_path => FakeResponse::new(200, "application/octet-stream", l.clone()),
            _ => FakeResponse::new(404, "application/json", "{}"),
        }
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("{addr}/app:v1");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["child_pull", "--exact", "--ignored", "--nocapture"])
        .env("BERTH_CHILD_ROOT", tmp.path())
        .env("BERTH_CHILD_REF", &name)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the child has half the layer in its ingest file.
    let ingest = tmp.path().join("content/ingest");
    let mut partial = 0;
    for _ in 0..600 {
        partial = std::fs::read_dir(&ingest)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        if stalled.load(Ordering::SeqCst) > 0 && partial as usize >= layer.len() / 2 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "child pull ended early"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(partial > 0, "child never started writing the layer");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let store = open(tmp.path()).await;
    assert_eq!(
        std::fs::read_dir(&ingest).unwrap().count(),
        0,
        "ingest left"
    );
    assert!(store.images().await.unwrap().is_empty());
    assert!(store.snapshots().list().unwrap().is_empty());
    let img = store.pull(&name, &PullOptions::default()).await.unwrap();
    assert_eq!(img.manifest, Digest::of(&manifest));
}
