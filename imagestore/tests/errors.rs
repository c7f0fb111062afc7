//! Bad input: each failure is one line naming the image and the cause, and leaves no image,
//! blob or snapshot behind. Uses the fixture registry for 404/platform cases and a tiny fake
//! registry on 127.0.0.1 for answers a real registry does not give.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use berth_imagestore::{Digest, Platform, PullOptions, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn assert_nothing_stored(store: &Store) {
    assert!(store.images().await.unwrap().is_empty());
    assert!(
        store.content().list().unwrap().is_empty(),
        "blobs left behind"
    );
    assert!(
        store.snapshots().list().unwrap().is_empty(),
        "snapshots left behind"
    );
    let ingest = store.root().join("content/ingest");
    assert_eq!(
        std::fs::read_dir(ingest).unwrap().count(),
        0,
        "ingest files left behind"
    );
}

fn one_line(e: &berth_imagestore::Error, image: &str, cause: &str) {
    let s = e.to_string();
    assert!(!s.contains('\n'), "multi-line error: {s}");
    assert!(s.contains(image), "error does not name {image}: {s}");
    assert!(
        s.to_lowercase().contains(cause),
        "error does not say {cause:?}: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_registry_errors() {
    let reg = common::registry();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).await.unwrap();

    let name = format!("{reg}/library/nginx:no-such-tag");
    let e = store
        .pull(&name, &PullOptions::default())
        .await
        .unwrap_err();
    one_line(&e, &name, "manifest unknown");
    assert_nothing_stored(&store).await;

    let name = format!("{reg}/library/nginx:multiarch");
    let opts = PullOptions {
        platform: "linux/s390x".parse::<Platform>().unwrap(),
        ..Default::default()
    };
    let e = store.pull(&name, &opts).await.unwrap_err();
    one_line(&e, &name, "no manifest for platform linux/s390x");
    assert_nothing_stored(&store).await;

    // An arm64 image cannot be pulled for amd64 by its single-arch tag...
    if std::env::consts::ARCH == "x86_64" {
        let opts = PullOptions {
            platform: "linux/arm64".parse::<Platform>().unwrap(),
            ..Default::default()
        };
        let e = store
            .pull(&format!("{reg}/library/nginx:latest"), &opts)
            .await
            .unwrap_err();
        one_line(&e, "nginx:latest", "image is for linux/amd64");
        assert_nothing_stored(&store).await;
        // ...but the index gives the arm64 one, which shares the cleanup layer.
        let img = store.pull(&name, &opts).await.unwrap();
        assert_eq!(img.platform.architecture, "arm64");
        let env = common::fixtures_env();
        if let Some(d) = env.get("NGINX_MANIFEST_DIGEST_arm64") {
            assert_eq!(&img.manifest.to_string(), d);
        }
    }

    // Tag, remove, GC.
    let amd = store
        .pull(
            &format!("{reg}/library/busybox:latest"),
            &PullOptions::default(),
        )
        .await
        .unwrap();
    store.tag(&amd.name, "localhost/mybox:1").await.unwrap();
    assert_eq!(
        store.image("localhost/mybox:1").await.unwrap().manifest,
        amd.manifest
    );
    store.remove(&amd.name).await.unwrap();
    assert_eq!(
        store.gc().await.unwrap().blobs,
        0,
        "still referenced by the tag"
    );
    store.remove("localhost/mybox:1").await.unwrap();
    let removed = store.gc().await.unwrap();
    assert!(removed.blobs >= 3 && removed.snapshots == 1, "{removed:?}");
    if std::env::consts::ARCH == "x86_64" {
        store.remove(&name).await.unwrap();
        store.gc().await.unwrap();
    }
    assert_nothing_stored(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_share_work() {
    let reg = common::registry();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).await.unwrap();
    let a = format!("{reg}/library/nginx:latest");
    let b = format!("{reg}/library/nginx:v2s2");
    let opts = PullOptions::default();
    let (ra, rb) = tokio::join!(
        store.pull_with_report(&a, &opts),
        store.pull_with_report(&b, &opts)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.0.chain_ids, rb.0.chain_ids);
    assert_eq!(
        ra.1.layers_unpacked + rb.1.layers_unpacked,
        3,
        "each layer unpacked once"
    );
    assert_eq!(store.snapshots().list().unwrap().len(), 3);
}

/// A fake registry: answers `GET /v2/<path>` from a table of (status, content type, body).
async fn fake_registry(routes: HashMap<String, (u16, String, Vec<u8>)>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let routes = routes.clone();
            tokio::spawn(async move {
                loop {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&req)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let path = line.split(' ').nth(1).unwrap_or("").to_string();
                    let (status, ct, body) = routes.get(&path).cloned().unwrap_or((
                        404,
                        "application/json".into(),
                        br#"{"errors":[{"code":"NOT_FOUND","message":"not here"}]}"#.to_vec(),
                    ));
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    if sock.write_all(head.as_bytes()).await.is_err()
                        || sock.write_all(&body).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn manifest_json(
    config: &Digest,
    config_size: usize,
    layer: &Digest,
    layer_size: usize,
    layer_type: &str,
) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},
        "layers":[{{"mediaType":"{layer_type}","digest":"{layer}","size":{layer_size}}}]}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_registry_errors() {
    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
    let mut layer_tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("hello").unwrap();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    layer_tar.append(&h, &b"hi"[..]).unwrap();
    let layer = layer_tar.into_inner().unwrap();
    let layer_d = Digest::of(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_d}"]}}}}"#
    )
    .replace("amd64", &Platform::host().architecture)
    .into_bytes();
    let config_d = Digest::of(&config);
    let good = manifest_json(
        &config_d,
        config.len(),
        &layer_d,
        layer.len(),
        "application/vnd.oci.image.layer.v1.tar",
    );
    let weird = manifest_json(
        &config_d,
        config.len(),
        &layer_d,
        layer.len(),
        "application/x-unknown-layer",
    );
    let wrong_blob = manifest_json(
        &config_d,
        config.len(),
        &Digest::of(b"other"),
        layer.len(),
        "application/vnd.oci.image.layer.v1.tar",
    );

    let mut routes = HashMap::new();
    let mut add = |path: &str, status: u16, ct: &str, body: Vec<u8>| {
        routes.insert(format!("/v2/{path}"), (status, ct.to_string(), body));
    };
    add("", 200, "application/json", b"{}".to_vec());
    add("good/manifests/v1", 200, OCI, good.clone());
    add("good/blobs/".to_owned().as_str(), 404, "text/plain", vec![]);
    add(
        &format!("good/blobs/{config_d}"),
        200,
        "application/octet-stream",
        config.clone(),
    );
    add(
        &format!("good/blobs/{layer_d}"),
        200,
        "application/octet-stream",
        layer.clone(),
    );
    add(
        "notjson/manifests/v1",
        200,
        OCI,
        b"<html>oops</html>".to_vec(),
    );
    add(
        "boom/manifests/v1",
        500,
        "text/plain",
        b"internal error".to_vec(),
    );
    add("weird/manifests/v1", 200, OCI, weird);
    add("badblob/manifests/v1", 200, OCI, wrong_blob);
    add(
        &format!("badblob/blobs/{config_d}"),
        200,
        "application/octet-stream",
        config.clone(),
    );
    add(
        &format!("badblob/blobs/{}", Digest::of(b"other")),
        200,
        "application/octet-stream",
        layer.clone(),
    );
    let addr = fake_registry(routes).await;

    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).await.unwrap();
    for (repo, cause) in [
        ("notjson", "not valid json"),
        ("boom", "500"),
        ("weird", "unsupported layer media type"),
        ("badblob", "digest"),
    ] {
        let name = format!("{addr}/{repo}:v1");
        let e = store
            .pull(&name, &PullOptions::default())
            .await
            .unwrap_err();
        eprintln!("{e}");
        one_line(&e, &name, cause);
        assert_nothing_stored(&store).await;
    }
    // The same fake registry serves a good image, so the failures above were the input's.
    let img = store
        .pull(&format!("{addr}/good:v1"), &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(img.layers, vec![layer_d]);
}
