//! Pulls from the real fixture registry (see tests/common): every tag it serves, platform
//! selection, the nginx whiteout checks through a mounted overlay, warm pulls, GC, and
//! concurrent pulls. Run as root (mounts, device nodes).

mod common;

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use berth_imagestore::{unmount, PullOptions, Store};
use common::{fixtures_env, is_mounted, registry};

fn host_is_amd64() -> bool {
    std::env::consts::ARCH == "x86_64"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_every_fixture_tag() {
    let reg = registry();
    let env = fixtures_env();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).await.unwrap();
    for (tag, media_type) in [
        (
            "library/busybox:latest",
            "application/vnd.oci.image.manifest.v1+json",
        ),
        (
            "library/nginx:latest",
            "application/vnd.oci.image.manifest.v1+json",
        ),
        (
            "library/nginx:v2s2",
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
        (
            "library/nginx:multiarch",
            "application/vnd.oci.image.manifest.v1+json",
        ),
        (
            "library/nginx:multiarch-v2s2",
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
        (
            "library/pause:latest",
            "application/vnd.oci.image.manifest.v1+json",
        ),
        (
            "library/pause:3.9",
            "application/vnd.oci.image.manifest.v1+json",
        ),
    ] {
        let name = format!("{reg}/{tag}");
        let img = store.pull(&name, &PullOptions::default()).await.unwrap();
        assert_eq!(img.name, name);
        assert_eq!(img.media_type, media_type, "{name}");
        assert_eq!(img.platform.os, "linux");
        assert_eq!(img.layers.len(), img.chain_ids.len());
        for c in &img.chain_ids {
            assert!(
                store.snapshots().exists(&c.to_string()).unwrap(),
                "{name}: {c}"
            );
        }
        for b in img.blobs() {
            assert!(store.content().exists(b).await, "{name}: blob {b}");
        }
        if tag.contains("multiarch") {
            assert!(img.index.is_some(), "{name}");
        }
    }
    if host_is_amd64() && !env.is_empty() {
        let nginx = store
            .image(&format!("{reg}/library/nginx:latest"))
            .await
            .unwrap();
        assert_eq!(
            nginx.manifest.to_string(),
            env["NGINX_MANIFEST_DIGEST_amd64"]
        );
        let multi = store
            .image(&format!("{reg}/library/nginx:multiarch"))
            .await
            .unwrap();
        assert_eq!(multi.index.unwrap().to_string(), env["NGINX_INDEX_DIGEST"]);
        assert_eq!(
            multi.manifest.to_string(),
            env["NGINX_MANIFEST_DIGEST_amd64"]
        );
        let bb = store
            .image(&format!("{reg}/library/busybox"))
            .await
            .unwrap();
        assert_eq!(bb.manifest.to_string(), env["BUSYBOX_MANIFEST_DIGEST"]);
        assert_eq!(
            store
                .image(&format!("{reg}/library/pause:3.9"))
                .await
                .unwrap()
                .manifest
                .to_string(),
            env["PAUSE_MANIFEST_DIGEST"]
        );
    }
    // Docker schema 2 and OCI nginx share config and layers, so they share snapshots.
    let oci = store
        .image(&format!("{reg}/library/nginx:latest"))
        .await
        .unwrap();
    let v2 = store
        .image(&format!("{reg}/library/nginx:v2s2"))
        .await
        .unwrap();
    assert_eq!(oci.chain_ids, v2.chain_ids);
    assert_eq!(oci.layers.len(), 3);

    // Image config -> runtime defaults.
    let c = store
        .config(&format!("{reg}/library/nginx:latest"))
        .await
        .unwrap();
    assert_eq!(c.entrypoint.unwrap(), vec!["/docker-entrypoint.sh"]);
    assert_eq!(c.cmd.unwrap(), vec!["nginx", "-g", "daemon off;"]);
    assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
    assert!(c.exposed_ports.unwrap().contains_key("80/tcp"));
    assert!(c.env.unwrap().iter().any(|e| e == "NGINX_VERSION=1.22.1"));
    let p = store
        .config(&format!("{reg}/library/pause:3.9"))
        .await
        .unwrap();
    assert_eq!(p.entrypoint.unwrap(), vec!["/catatonit", "-P"]);
    assert_eq!(p.user.as_deref(), Some("65535:65535"));
    assert_eq!(p.working_dir.as_deref(), Some("/"));
    assert!(p
        .labels
        .unwrap()
        .contains_key("org.opencontainers.image.title"));

    // busybox applets are symlinks; the store names are listed.
    let names: Vec<String> = store
        .images()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names.len(), 7, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_overlay_applies_whiteouts() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).await.unwrap();
    let name = format!("{reg}/library/nginx:latest");
    let (img, cold) = store
        .pull_with_report(&name, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(cold.layers_unpacked, 3);
    eprintln!(
        "cold pull+unpack of {name}: {:?} ({} bytes)",
        cold.elapsed, cold.bytes_downloaded
    );
    let (_, warm) = store
        .pull_with_report(&name, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (
            warm.layers_downloaded,
            warm.layers_unpacked,
            warm.bytes_downloaded
        ),
        (0, 0, 0)
    );
    eprintln!("warm pull of {name}: {:?}", warm.elapsed);

    // The cleanup layer on its own holds the overlayfs forms.
    let top = store
        .snapshots()
        .fs_path(&img.chain_ids[2].to_string())
        .unwrap();
    let wh = std::fs::symlink_metadata(top.join("var/www/html/index.html")).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; {:?}",
            top.display(),
            std::process::Command::new("find").arg(&top).output()
        )
    });
    assert!(wh.file_type().is_char_device());

    let spec = store.rootfs_for(&name, "ctr-1").await.unwrap();
    assert_eq!(spec.fstype, "overlay");
    let target = tmp.path().join("rootfs");
    std::fs::create_dir(&target).unwrap();
    spec.mount(&target).unwrap();
    let checks = std::panic::catch_unwind(|| check_nginx_rootfs(&target));
    unmount(&target).unwrap();
    assert!(!is_mounted(&target), "{} still mounted", target.display());
    checks.unwrap();

    // A read-only view shows the same tree and refuses writes.
    let spec = store.view_for(&name, "view-1").await.unwrap();
    spec.mount(&target).unwrap();
    let ro = std::fs::write(target.join("x"), "x");
    let index = std::fs::read_to_string(target.join("var/www/html/index.nginx-debian.html"));
    unmount(&target).unwrap();
    assert!(!is_mounted(&target));
    assert!(ro.is_err());
    assert!(index.unwrap().contains("Welcome to nginx!"));

    store.remove_rootfs("ctr-1").await.unwrap();
    store.remove_rootfs("view-1").await.unwrap();
}

fn check_nginx_rootfs(root: &Path) {
    // Directory whiteout: /usr/share/man exists in layers 1 and 2, removed by layer 3.
    assert!(
        !root.join("usr/share/man").exists(),
        "/usr/share/man should be whited out"
    );
    assert!(root.join("usr/share").is_dir());
    // File whiteout: the layer-2 placeholder is gone, the Debian page shows through.
    assert!(
        std::fs::symlink_metadata(root.join("var/www/html/index.html")).is_err(),
        "index.html should be whited out"
    );
    let debian =
        std::fs::read_to_string(root.join("var/www/html/index.nginx-debian.html")).unwrap();
    assert!(debian.contains("Welcome to nginx!"));
    assert_eq!(debian.len(), 615);
    // Opaque directory: lower.txt hidden, upper.txt present.
    assert!(!root.join("var/www/html/fixture/lower.txt").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("var/www/html/fixture/upper.txt"))
            .unwrap()
            .trim(),
        "upper: from layer 3"
    );
    // Merged /usr layout and busybox hard links from layer 1, nginx from layer 2.
    assert_eq!(
        std::fs::read_link(root.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert!(root.join("usr/sbin/nginx").is_file());
    assert!(root.join("docker-entrypoint.sh").is_file());
    assert_eq!(
        std::fs::read_link(root.join("var/log/nginx/access.log")).unwrap(),
        Path::new("/dev/stdout")
    );
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("www-data:x:33:33"));
    // The writable layer works.
    std::fs::write(root.join("tmp/written"), "x").unwrap();
}
