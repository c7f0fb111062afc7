//! Registry configuration (mirrors), login/logout (basic auth against a real docker-registry
//! with htpasswd, bearer tokens against a fake token server) and push to a private registry.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use berth_imagestore::{
    Digest, Error, ImportOptions, ProgressPhase, ProgressSink, PullOptions, PushOptions,
    RegistryConfig, Store, StoreOptions,
};
use common::{FakeResponse, PrivateRegistry, REG_PASS, REG_USER};

async fn open(root: &std::path::Path, registry: RegistryConfig) -> Store {
    Store::open_with(root, StoreOptions { registry })
        .await
        .unwrap()
}

fn assert_one_line(e: &Error, what: &str, cause: &str) {
    let s = e.to_string();
    assert!(!s.contains('\n'), "multi-line error: {s}");
    assert!(s.contains(what), "error does not name {what}: {s}");
    assert!(
        s.to_lowercase().contains(cause),
        "error does not say {cause:?}: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_tried_in_order_then_upstream() {
    let reg = common::registry();
    let tmp = tempfile::tempdir().unwrap();
    // 127.0.0.1:1 and :2 refuse connections: a dead upstream and a dead mirror.
    let toml = format!(
        r#"
        [registry.mirrors]
        "127.0.0.1:1" = ["127.0.0.1:2", "http://{reg}"]
        "{reg}" = ["127.0.0.1:2"]
        "#
    );
    let cfg_path = tmp.path().join("config.toml");
    std::fs::write(&cfg_path, toml).unwrap();
    let mut cfg = RegistryConfig::load(&cfg_path).unwrap();
    cfg.auth_file = None;
    cfg.docker_config = None;
    let store = open(&tmp.path().join("store"), cfg.clone()).await;

    // Served by the second mirror although the upstream does not exist.
    let img = store
        .pull(
            "127.0.0.1:1/library/busybox:latest",
            &PullOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(img.name, "127.0.0.1:1/library/busybox:latest");
    let env = common::fixtures_env();
    if let Some(d) = env.get("BUSYBOX_MANIFEST_DIGEST") {
        assert_eq!(&img.manifest.to_string(), d);
    }
    // Dead mirror, live upstream.
    store
        .pull(
            &format!("{reg}/library/pause:latest"),
            &PullOptions::default(),
        )
        .await
        .unwrap();

    // mirrors_only: the dead mirror is all there is; the error names it.
    cfg.mirrors_only.push(reg.clone());
    let store2 = open(&tmp.path().join("store2"), cfg).await;
    let name = format!("{reg}/library/pause:latest");
    let e = store2
        .pull(&name, &PullOptions::default())
        .await
        .unwrap_err();
    assert_one_line(&e, &name, "127.0.0.1:2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_push_and_pull_back() {
    let reg = common::registry();
    let private = PrivateRegistry::start_with_auth();
    let tmp = tempfile::tempdir().unwrap();
    let auth_file = tmp.path().join("etc/auth.json");
    let store = open(
        &tmp.path().join("a"),
        common::hermetic_config(Some(auth_file.clone())),
    )
    .await;
    let src = store
        .pull(
            &format!("{reg}/library/nginx:latest"),
            &PullOptions::default(),
        )
        .await
        .unwrap();
    let dest = format!("{}/mirror/nginx:1", private.addr);

    // Without credentials the registry refuses; nothing is stored locally by that.
    let e = store
        .push_to(&src.name, &dest, &PushOptions::default())
        .await
        .unwrap_err();
    assert_one_line(&e, &dest, "authoriz");

    let e = store
        .login(&private.addr, REG_USER, "wrong")
        .await
        .unwrap_err();
    assert_one_line(&e, &private.addr, "unauthorized");
    assert!(
        !auth_file.exists(),
        "failed login must not write the auth file"
    );

    store
        .login(&format!("http://{}/v2/", private.addr), REG_USER, REG_PASS)
        .await
        .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&auth_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&auth_file).unwrap();
    assert!(text.contains(&private.addr), "{text}");

    let (sink, mut rx) = ProgressSink::channel();
    let opts = PushOptions {
        progress: Some(sink),
        ..Default::default()
    };
    let rep = store.push_to(&src.name, &dest, &opts).await.unwrap();
    drop(opts);
    let mut events = Vec::new();
    while let Some(ev) = rx.recv().await {
        events.push(ev);
    }
    for d in src.layers.iter().chain([&src.config]) {
        let evs: Vec<_> = events.iter().filter(|e| &e.digest == d).collect();
        assert_eq!(evs.first().unwrap().phase, ProgressPhase::Waiting);
        assert_eq!(evs.last().unwrap().phase, ProgressPhase::Done);
        let up = evs
            .iter()
            .rfind(|e| e.phase == ProgressPhase::Uploading)
            .expect("uploading events");
        assert_eq!(up.done, up.total);
    }
    assert_eq!(rep.digest, src.manifest);
    assert!(!rep.whole_index);
    assert_eq!(rep.blobs_uploaded, 1 + src.layers.len());
    assert_eq!(rep.blobs_skipped, 0);
    // Again: every blob is there already.
    let rep = store
        .push_to(&src.name, &dest, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (rep.blobs_uploaded, rep.blobs_skipped),
        (0, 1 + src.layers.len())
    );

    // A fresh store that reads the same auth file pulls it back, digests equal.
    let fresh = open(
        &tmp.path().join("b"),
        common::hermetic_config(Some(auth_file.clone())),
    )
    .await;
    let back = fresh.pull(&dest, &PullOptions::default()).await.unwrap();
    assert_eq!(back.manifest, src.manifest);
    assert_eq!(back.config, src.config);
    assert_eq!(back.layers, src.layers);
    assert_eq!(back.chain_ids, src.chain_ids);

    // logout: the next fresh store has no credentials and is refused.
    assert!(store.logout(&private.addr).await.unwrap());
    assert!(!store.logout(&private.addr).await.unwrap());
    let anon = open(
        &tmp.path().join("c"),
        common::hermetic_config(Some(auth_file.clone())),
    )
    .await;
    let e = anon.pull(&dest, &PullOptions::default()).await.unwrap_err();
    assert_one_line(&e, &dest, "authoriz");
    // Credentials given with the pull (a kubelet's PullImage auth): wrong ones are refused
    // and store nothing; right ones pull, without writing any auth file.
    let with = |password: &str| PullOptions {
        credentials: Some(berth_imagestore::auth::Credentials {
            username: REG_USER.into(),
            password: password.into(),
        }),
        ..Default::default()
    };
    let e = anon.pull(&dest, &with("wrong")).await.unwrap_err();
    assert_one_line(&e, &dest, "authoriz");
    assert!(anon.image(&dest).await.is_err());
    let back = anon.pull(&dest, &with(REG_PASS)).await.unwrap();
    assert_eq!(back.manifest, src.manifest);
    assert!(
        !auth_file.exists()
            || !std::fs::read_to_string(&auth_file)
                .unwrap()
                .contains(&private.addr)
    );
}

/// An image stored with every platform of its index (imported from the fixture layout) is
/// pushed as that index: the tag keeps the index digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_whole_index() {
    let layout = common::fixtures_dir().join("oci/nginx");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let Some(multi) = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "multiarch")
    else {
        eprintln!("fixture layout has no multiarch index; skipping");
        return;
    };
    let index_digest: Digest = multi["digest"].as_str().unwrap().parse().unwrap();
    let private = PrivateRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("a"), common::hermetic_config(None)).await;
    store
        .import(
            &layout,
            &ImportOptions {
                name: Some("localhost/fx/nginx".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let dest = format!("{}/fx/nginx:multiarch", private.addr);
    let rep = store
        .push_to(
            "localhost/fx/nginx:multiarch",
            &dest,
            &PushOptions::default(),
        )
        .await
        .unwrap();
    assert!(rep.whole_index);
    assert_eq!(rep.digest, index_digest);

    let fresh = open(&tmp.path().join("b"), common::hermetic_config(None)).await;
    let back = fresh.pull(&dest, &PullOptions::default()).await.unwrap();
    assert_eq!(back.index.as_ref(), Some(&index_digest));
    // Pulled with one platform only: pushing it sends that platform's manifest.
    let single = format!("{}/fx/nginx:single", private.addr);
    let rep = fresh
        .push_to(&dest, &single, &PushOptions::default())
        .await
        .unwrap();
    assert!(!rep.whole_index);
    assert_eq!(rep.digest, back.manifest);
    let arm = fresh
        .pull(
            &dest,
            &PullOptions {
                platform: "linux/arm64".parse().unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(arm.platform.architecture, "arm64");

    // Pulled with all platforms (from the fixture registry): pushed as the same index.
    let reg = common::registry();
    let all = open(&tmp.path().join("c"), common::hermetic_config(None)).await;
    let rec = all
        .pull(
            &format!("{reg}/library/nginx:multiarch"),
            &PullOptions {
                all_platforms: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rec.index.as_ref(), Some(&index_digest));
    assert!(!rec.other_platforms.is_empty());
    let again = format!("{}/fx/nginx:again", private.addr);
    let rep = all
        .push_to(&rec.name, &again, &PushOptions::default())
        .await
        .unwrap();
    assert!(rep.whole_index);
    assert_eq!(rep.digest, index_digest);
    // GC keeps the other platforms' blobs while the image exists.
    all.gc().await.unwrap();
    for d in &rec.other_platforms {
        assert!(all.content().exists(d).await, "{d} collected");
    }
}

/// Bearer-token login and pull against a fake registry + token server (no real token server
/// is packaged for Debian).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_login_and_pull() {
    use base64::Engine as _;
    let (layer, config, manifest) = common::tiny_image(b"bearer");
    let token_requests = Arc::new(AtomicUsize::new(0));
    let addr_cell: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
    let good_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{REG_USER}:{REG_PASS}"))
    );
    let (tr, cell) = (token_requests.clone(), addr_cell.clone());
    let (l2, c2, m2) = (layer.clone(), config.clone(), manifest.clone());
    let addr = common::fake_http(move |req| {
        let me = cell.get().cloned().unwrap_or_default();
        let challenge = format!(r#"Bearer realm="http://{me}/token",service="fake""#);
        let unauthorized = FakeResponse::new(
            401,
            "application/json",
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        )
        .header("WWW-Authenticate", &challenge);
        if req.path.starts_with("/token") {
            tr.fetch_add(1, Ordering::SeqCst);
            return if req.headers.get("authorization") == Some(&good_basic) {
                FakeResponse::new(200, "application/json", r#"{"token":"t0k"}"#)
            } else {
                FakeResponse::new(401, "application/json", "{}")
            };
        }
        if req.headers.get("authorization").map(String::as_str) != Some("Bearer t0k") {
            return unauthorized;
        }
        let path = req.path.split('?').next().unwrap_or("");
        let blob = |b: &Vec<u8>| FakeResponse::new(200, "application/octet-stream", b.clone());
        match path {
            "/v2/" => FakeResponse::new(200, "application/json", "{}"),
            "/v2/app/manifests/v1" => FakeResponse::new(
                200,
                "application/vnd.oci.image.manifest.v1+json",
                m2.clone(),
            )
            .header("Docker-Content-Digest", &Digest::of(&m2).to_string()),
            p if p == format!("/v2/app/blobs/{}", Digest::of(&c2)) => blob(&c2),
            p if p == format!("/v2/app/blobs/{}", Digest::of(&l2)) => blob(&l2),
            _ => FakeResponse::new(404, "application/json", "{}"),
        }
    })
    .await;
    addr_cell.set(addr.clone()).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let auth_file = tmp.path().join("auth.json");
    let store = open(
        &tmp.path().join("s"),
        common::hermetic_config(Some(auth_file.clone())),
    )
    .await;
    let name = format!("{addr}/app:v1");
    let e = store
        .pull(&name, &PullOptions::default())
        .await
        .unwrap_err();
    assert_one_line(&e, &name, "");
    assert!(store.images().await.unwrap().is_empty());

    let e = store.login(&addr, REG_USER, "nope").await.unwrap_err();
    assert_one_line(&e, &addr, "unauthorized");
    store.login(&addr, REG_USER, REG_PASS).await.unwrap();
    assert!(token_requests.load(Ordering::SeqCst) >= 2);
    let img = store.pull(&name, &PullOptions::default()).await.unwrap();
    assert_eq!(img.manifest, Digest::of(&manifest));
    let hist = store.history(&name).await.unwrap();
    assert_eq!(hist.len(), 1);
    assert_eq!(hist[0].created_by.as_deref(), Some("ADD hello"));
    assert_eq!(hist[0].size, layer.len() as u64);
}
