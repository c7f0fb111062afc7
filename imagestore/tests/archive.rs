//! Import/export round trips of the fixtures' OCI layouts (directory, OCI archive, docker
//! archive), checked against the source digests and against skopeo as a reader; history;
//! bad archives.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use berth_imagestore::{ArchiveFormat, Digest, Error, ImportOptions, Store, StoreOptions};

async fn open(root: &Path) -> Store {
    Store::open_with(
        root,
        StoreOptions {
            registry: common::hermetic_config(None),
        },
    )
    .await
    .unwrap()
}

/// ref.name -> digest of a layout's index.json.
fn refs(layout: &Path) -> BTreeMap<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every blob of a layout has the digest it is named by.
fn check_blobs(layout: &Path) -> usize {
    let dir = layout.join("blobs/sha256");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let data = std::fs::read(e.path()).unwrap();
        assert_eq!(
            Digest::of(&data).hex(),
            e.file_name().to_str().unwrap(),
            "blob {:?}",
            e.path()
        );
        n += 1;
    }
    n
}

fn has_skopeo() -> bool {
    std::process::Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn skopeo_inspect(transport: &str) -> serde_json::Value {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", transport])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {transport}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_layouts_round_trip() {
    let fx = common::fixtures_dir();
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("a")).await;
    for name in ["busybox", "nginx"] {
        let layout = fx.join("oci").join(name);
        let src = refs(&layout);
        let repo = format!("localhost/fx/{name}");
        let imgs = store
            .import(
                &layout,
                &ImportOptions {
                    name: Some(repo.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(imgs.len(), src.len());
        let names: Vec<String> = src.keys().map(|t| format!("{repo}:{t}")).collect();
        for (tag, digest) in &src {
            let rec = store.image(&format!("{repo}:{tag}")).await.unwrap();
            let top = rec.index.as_ref().unwrap_or(&rec.manifest);
            assert_eq!(&top.to_string(), digest, "{repo}:{tag}");
        }
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();

        // OCI directory: same ref names, same digests, every blob verified.
        let out = tmp.path().join(format!("{name}-layout"));
        store
            .export(&name_refs, &out, ArchiveFormat::OciDir)
            .await
            .unwrap();
        assert_eq!(refs(&out), src);
        assert!(check_blobs(&out) > 0);
        assert!(out.join("oci-layout").exists());
        let e = store
            .export(&name_refs, &out, ArchiveFormat::OciDir)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");

        // OCI archive into a fresh store: same digests.
        let tar = tmp.path().join(format!("{name}.oci.tar"));
        store
            .export(&name_refs, &tar, ArchiveFormat::OciArchive)
            .await
            .unwrap();
        let fresh = open(&tmp.path().join(format!("fresh-{name}"))).await;
        let back = fresh.import(&tar, &ImportOptions::default()).await.unwrap();
        assert_eq!(back.len(), src.len());
        for rec in &back {
            let orig = store.image(&rec.name).await.unwrap();
            assert_eq!(rec.manifest, orig.manifest);
            assert_eq!(rec.index, orig.index);
            assert_eq!(rec.chain_ids, orig.chain_ids);
        }
        if has_skopeo() {
            let tag = src.keys().next().unwrap();
            let m = skopeo_inspect(&format!("oci-archive:{}:{tag}", tar.display()));
            assert_eq!(m["schemaVersion"], 2);
        }
    }

    // The nginx fixture keeps its whiteouts through import: same check as a pull.
    let rec = store.image("localhost/fx/nginx:latest").await.unwrap();
    assert_eq!(rec.layers.len(), 3);
    let hist = store.history("localhost/fx/nginx:latest").await.unwrap();
    let with_layer: Vec<_> = hist.iter().filter(|h| !h.empty_layer).collect();
    assert_eq!(with_layer.len(), rec.layers.len());
    for (h, l) in with_layer.iter().zip(&rec.layers) {
        assert_eq!(h.layer.as_ref(), Some(l));
        assert!(h.size > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_archive_round_trip() {
    let fx = common::fixtures_dir();
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("a")).await;
    store
        .import(
            fx.join("oci/nginx"),
            &ImportOptions {
                name: Some("localhost/fx/nginx".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let orig = store.image("localhost/fx/nginx:latest").await.unwrap();
    let tar = tmp.path().join("nginx.docker.tar");
    store
        .export(
            &[
                "localhost/fx/nginx:latest",
                "localhost/fx/nginx:linux-amd64",
            ],
            &tar,
            ArchiveFormat::DockerArchive,
        )
        .await
        .unwrap();
    if has_skopeo() {
        let m = skopeo_inspect(&format!(
            "docker-archive:{}:localhost/fx/nginx:latest",
            tar.display()
        ));
        assert_eq!(m["config"]["digest"], orig.config.to_string());
    }
    let fresh = open(&tmp.path().join("b")).await;
    let back = fresh.import(&tar, &ImportOptions::default()).await.unwrap();
    assert_eq!(back.len(), 2);
    for rec in &back {
        assert_eq!(rec.config, orig.config);
        assert_eq!(rec.layers, orig.layers);
        assert_eq!(rec.chain_ids, orig.chain_ids);
    }
    assert_eq!(back[0].name, "localhost/fx/nginx:latest");
    // The rootfs is usable.
    let view = fresh.view_for(&back[0].name, "v").await.unwrap();
    assert_eq!(view.fstype, "overlay");
    // Nothing but the images' blobs is left (the archive's metadata files are not blobs).
    let mut live: Vec<Digest> = back[0].blobs().cloned().collect();
    live.sort();
    live.dedup();
    assert_eq!(fresh.content().list().unwrap(), live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_archives_store_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("s")).await;
    let check = |e: Error, path: &Path, cause: &str| {
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert!(s.contains(&path.display().to_string()), "{s}");
        assert!(s.contains(cause), "{s}");
    };
    let assert_empty = |store: &Store| {
        assert!(store.content().list().unwrap().is_empty());
        assert!(store.snapshots().list().unwrap().is_empty());
    };

    // A tar whose blob does not match its name.
    let (layer, config, manifest) = common::tiny_image(b"x");
    let md = Digest::of(&manifest);
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"localhost/bad:1"}}}}]}}"#,
        manifest.len()
    );
    let build = |files: Vec<(String, Vec<u8>)>| {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses "..": write the raw name.
            let name = p.as_bytes();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    };
    let blob = |d: &[u8]| format!("blobs/sha256/{}", Digest::of(d).hex());
    let good_files = vec![
        ("index.json".to_string(), index.clone().into_bytes()),
        (blob(&manifest), manifest.clone()),
        (blob(&config), config.clone()),
        (blob(&layer), layer.clone()),
    ];
    let mut wrong = good_files.clone();
    wrong[3].1 = b"not the layer".to_vec();
    let p = tmp.path().join("wrong.tar");
    std::fs::write(&p, build(wrong)).unwrap();
    let e = store
        .import(&p, &ImportOptions::default())
        .await
        .unwrap_err();
    check(e, &p, "digest mismatch");
    assert_empty(&store);

    let mut escape = good_files.clone();
    escape.push(("../evil".into(), b"x".to_vec()));
    let p = tmp.path().join("escape.tar");
    std::fs::write(&p, build(escape)).unwrap();
    let e = store
        .import(&p, &ImportOptions::default())
        .await
        .unwrap_err();
    check(e, &p, "leaves the archive");
    assert_empty(&store);

    let mut missing = good_files.clone();
    missing.pop();
    let p = tmp.path().join("missing.tar");
    std::fs::write(&p, build(missing)).unwrap();
    let e = store
        .import(&p, &ImportOptions::default())
        .await
        .unwrap_err();
    check(e, &p, "missing");
    assert_empty(&store);

    let p = tmp.path().join("garbage.tar");
    std::fs::write(&p, b"this is not a tar file at all, not even close....").unwrap();
    let e = store
        .import(&p, &ImportOptions::default())
        .await
        .unwrap_err();
    check(e, &p, "");
    assert_empty(&store);

    // The good one, gzip-compressed, imports.
    let p = tmp.path().join("good.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &build(good_files)).unwrap();
    std::fs::write(&p, gz.finish().unwrap()).unwrap();
    let imgs = store.import(&p, &ImportOptions::default()).await.unwrap();
    assert_eq!(imgs[0].name, "localhost/bad:1");
    assert_eq!(imgs[0].manifest, md);
}

/// Archives written by skopeo (an independent implementation) import, with the same config
/// and root filesystem chain as the source layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_written_archives_import() {
    if !has_skopeo() {
        eprintln!("skopeo not installed; skipping");
        return;
    }
    let fx = common::fixtures_dir().join("oci/busybox");
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("s")).await;
    let orig = store
        .import(
            &fx,
            &ImportOptions {
                name: Some("localhost/orig/busybox".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .remove(0);
    for (transport, file) in [
        ("docker-archive", "bb.docker.tar"),
        ("oci-archive", "bb.oci.tar"),
    ] {
        let path = tmp.path().join(file);
        let out = std::process::Command::new("skopeo")
            .args(["--insecure-policy", "copy", "-q"])
            .arg(format!("oci:{}:latest", fx.display()))
            .arg(format!(
                "{transport}:{}:localhost/sk/busybox:1",
                path.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let imgs = store
            .import(&path, &ImportOptions::default())
            .await
            .unwrap();
        assert_eq!(imgs.len(), 1, "{transport}");
        let rec = &imgs[0];
        assert!(rec.name.starts_with("localhost/sk/busybox"), "{}", rec.name);
        assert_eq!(rec.config, orig.config, "{transport}");
        assert_eq!(rec.chain_ids, orig.chain_ids, "{transport}");
        store.remove(&rec.name).await.unwrap();
    }
}
