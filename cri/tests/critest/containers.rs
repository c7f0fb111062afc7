//! critest's Container, Container Mount Propagation, Container OOM and Container Mount Readonly
//! specs.

use super::*;
use crate::framework::*;
use berth_tests_support::cri::*;
use k8s_cri::v1::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub async fn specs() {
    let (_bridge, d) = critest_daemon("critest-ctrs", 22);
    let c = Cri::new(&d).await;
    let mut suite = Suite::new();
    let basic = "Container runtime should support basic operations on container";
    suite
        .spec(
            &format!("{basic} runtime should support creating container [Conformance]"),
            Box::pin(container_create(c.clone())),
        )
        .await;
    suite
        .spec(
            &format!(
                "{basic} runtime should support preserving container attributes [Conformance]"
            ),
            Box::pin(container_attributes(c.clone())),
        )
        .await;
    suite
        .spec(
            &format!(
                "{basic} runtime should support starting and stopping container [Conformance]"
            ),
            Box::pin(container_start_stop(c.clone())),
        )
        .await;
    suite
        .spec(
            &format!("{basic} runtime should support removing created, running and stopped container [Conformance]"),
            Box::pin(container_remove(c.clone())),
        )
        .await;
    suite
        .spec(
            &format!("{basic} runtime should support execSync [Conformance]"),
            Box::pin(container_exec_sync(c.clone())),
        )
        .await;
    suite
        .spec(
            &format!("{basic} runtime should support execSync with timeout [Conformance]"),
            Box::pin(container_exec_sync_timeout(c.clone())),
        )
        .await;
    suite
        .spec(
            &format!("{basic} runtime should support listing container stats (by id, nil filter, three containers, labels) [Conformance]"),
            Box::pin(container_stats(c.clone())),
        )
        .await;
    suite
        .spec(
            "Container runtime should support adding volume and device runtime should support \
             starting container with volume [Conformance]",
            Box::pin(container_volume(c.clone(), false)),
        )
        .await;
    suite
        .spec(
            "Container runtime should support adding volume and device runtime should support \
             starting container with volume when host path is a symlink [Conformance]",
            Box::pin(container_volume(c.clone(), true)),
        )
        .await;
    suite
        .spec(
            "Container runtime should support log runtime should support starting container \
             with log [Conformance]",
            Box::pin(container_log(c.clone())),
        )
        .await;
    suite
        .spec(
            "Container runtime should support log runtime should support reopening container \
             log [Conformance]",
            Box::pin(container_reopen_log(c.clone())),
        )
        .await;
    suite
        .spec(
            "Container OOM runtime should output OOMKilled reason should terminate with \
             exitCode 137 and reason OOMKilled",
            Box::pin(container_oom(c.clone())),
        )
        .await;
    for (p, what) in [
        (
            MountPropagation::PropagationPrivate,
            "mount with 'rprivate' should not support propagation",
        ),
        (
            MountPropagation::PropagationBidirectional,
            "mount with 'rshared' should support propagation from host to container and vice versa",
        ),
        (
            MountPropagation::PropagationHostToContainer,
            "mount with 'rslave' should support propagation from host to container",
        ),
    ] {
        suite
            .spec(
                &format!(
                    "Container Mount Propagation runtime should support mount propagation {what}"
                ),
                Box::pin(mount_propagation(c.clone(), p)),
            )
            .await;
    }
    let ro = "Container Mount Readonly runtime should support readonly mounts";
    suite
        .spec(
            &format!("{ro} should support non-recursive readonly mounts"),
            Box::pin(readonly_mount(c.clone(), false)),
        )
        .await;
    suite
        .spec(
            &format!("{ro} should support recursive readonly mounts"),
            Box::pin(readonly_mount(c.clone(), true)),
        )
        .await;
    suite
        .spec(
            &format!("{ro} should reject a recursive readonly mount with PROPAGATION_HOST_TO_CONTAINER, PROPAGATION_BIDIRECTIONAL or ReadOnly: false"),
            Box::pin(readonly_mount_rejects(c.clone())),
        )
        .await;
    suite
        .spec(
            "Image Volume [Feature:ImageVolume] is skipped: berthd answers Unimplemented",
            Box::pin(image_volume_unimplemented(c.clone())),
        )
        .await;
    suite.finish();
    assert_eq!(d.leftovers(), Vec::<String>::new());
}

async fn container_create(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let id = c
        .create_container(&pod, &cfg, Cri::default_container("container-for-create-"))
        .await?;
    let listed = c
        .list_containers(ContainerFilter {
            id: id.clone(),
            ..Default::default()
        })
        .await?;
    check!(listed.iter().any(|x| x.id == id), "not listed: {listed:?}");
    c.cleanup_pod(&pod).await
}

async fn container_attributes(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let name = format!("container-with-attributes-{}", uuid());
    let labels: HashMap<String, String> = [
        ("foo", "bar"),
        ("io.kubernetes.container.name", name.as_str()),
        ("io.kubernetes.pod.name", "fake-pod-name"),
        ("io.kubernetes.pod.namespace", "fake-pod-namespace"),
        ("io.kubernetes.pod.uid", "fake-pod-uid"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations: HashMap<String, String> = [("abc".to_string(), "def".to_string())].into();
    let md = ContainerMetadata {
        name: name.clone(),
        attempt: 2,
    };
    let id = c
        .create_container(
            &pod,
            &cfg,
            ContainerConfig {
                metadata: Some(md.clone()),
                image: spec(&busybox()),
                labels: labels.clone(),
                annotations: annotations.clone(),
                ..Default::default()
            },
        )
        .await?;
    let s = c.status(&id).await?;
    check!(
        s.metadata.as_ref() == Some(&md),
        "metadata {:?}",
        s.metadata
    );
    subset(&s.labels, &labels, "status labels")?;
    subset(&s.annotations, &annotations, "status annotations")?;
    let listed = c
        .list_containers(ContainerFilter {
            id: id.clone(),
            ..Default::default()
        })
        .await?;
    check!(listed.len() == 1, "{} listed by id", listed.len());
    check!(listed[0].metadata.as_ref() == Some(&md), "listed metadata");
    subset(&listed[0].labels, &labels, "listed labels")?;
    subset(&listed[0].annotations, &annotations, "listed annotations")?;
    c.cleanup_pod(&pod).await
}

async fn container_start_stop(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let id = c
        .create_container(
            &pod,
            &cfg,
            Cri::default_container("container-for-start-test-"),
        )
        .await?;
    c.start_running(&id).await?;
    let id2 = c
        .create_container(
            &pod,
            &cfg,
            Cri::default_container("container-for-stop-test-"),
        )
        .await?;
    c.start(&id2).await?;
    let s = c.stop(&id2).await?;
    // critest gives StopContainer 60 s and fails the spec if the call takes longer: `top` must
    // end on the SIGTERM, not on the SIGKILL after the grace period.
    check!(
        s.exit_code != 137,
        "top was killed (exit 137) after the grace period, not stopped by SIGTERM: {s:?}"
    );
    c.cleanup_pod(&pod).await
}

async fn container_remove(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    for phase in ["created", "running", "stopped"] {
        let id = c
            .create_container(
                &pod,
                &cfg,
                Cri::container(
                    &format!("container-for-remove-{phase}-test-"),
                    &busybox(),
                    &["sh", "-c", "top"],
                ),
            )
            .await?;
        if phase != "created" {
            c.start(&id).await?;
        }
        if phase == "stopped" {
            c.stop(&id).await?;
        }
        c.remove(&id).await?;
        let listed = c
            .list_containers(ContainerFilter {
                id: id.clone(),
                ..Default::default()
            })
            .await?;
        check!(
            !listed.iter().any(|x| x.id == id),
            "{phase}: listed after remove"
        );
    }
    c.cleanup_pod(&pod).await
}

async fn container_exec_sync(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let id = c
        .create_container(&pod, &cfg, Cri::default_container("container-for-exec-"))
        .await?;
    c.start(&id).await?;
    let out = c.exec_ok(&id, &["echo", "-n", "hello"]).await?;
    check!(out == "hello", "stdout {out:?}");
    c.cleanup_pod(&pod).await
}

async fn container_exec_sync_timeout(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let id = c
        .create_container(
            &pod,
            &cfg,
            Cri::default_container("container-for-exec-timeout-"),
        )
        .await?;
    c.start(&id).await?;
    match c.exec(&id, &["sleep", "4321"], 1).await {
        Err(_) => {}
        Ok((_, _, code)) => check!(code != 0, "sleep 4321 with a 1 s timeout succeeded"),
    }
    // critest runs `pgrep sleep || true`; busybox of Debian has pidof, not pgrep.
    let out = c.exec_ok(&id, &["sh", "-c", "pidof sleep || true"]).await?;
    check!(
        out.trim().is_empty(),
        "the timed-out sleep still runs: {out:?}"
    );
    c.cleanup_pod(&pod).await
}

async fn stats_ids(
    c: &mut Cri,
    filter: Option<ContainerStatsFilter>,
) -> Result<Vec<String>, String> {
    Ok(c.rt
        .list_container_stats(ListContainerStatsRequest { filter })
        .await
        .ctx("ListContainerStats")?
        .stats
        .into_iter()
        .filter_map(|s| s.attributes.map(|a| a.id))
        .collect())
}

async fn container_stats(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let id = c
        .create_container(&pod, &cfg, Cri::default_container("container-for-stats-"))
        .await?;
    c.start(&id).await?;
    let s =
        c.rt.container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .ctx("ContainerStats")?
        .stats
        .ok_or("ContainerStats: no stats")?;
    let a = s.attributes.clone().unwrap_or_default();
    check!(a.id == id, "attributes.id {:?}", a.id);
    check!(
        a.metadata
            .is_some_and(|m| m.name.contains("container-for-stats-")),
        "attributes.metadata"
    );
    check!(
        s.cpu.as_ref().is_some_and(|x| x.timestamp != 0),
        "cpu.timestamp: {s:?}"
    );
    check!(
        s.memory.as_ref().is_some_and(|x| x.timestamp != 0),
        "memory.timestamp: {s:?}"
    );
    let by_id = stats_ids(
        &mut c,
        Some(ContainerStatsFilter {
            id: id.clone(),
            ..Default::default()
        }),
    )
    .await?;
    check!(by_id.contains(&id), "ListContainerStats by id: {by_id:?}");
    let mut three = Vec::new();
    for _ in 0..3 {
        three.push(
            c.create_container(
                &pod,
                &cfg,
                Cri::default_container("container-for-stats-with-nil-filter-"),
            )
            .await?,
        );
    }
    for x in &three {
        c.start(x).await?;
    }
    let all = stats_ids(&mut c, None).await?;
    for x in three.iter().chain([&id]) {
        check!(
            all.contains(x),
            "ListContainerStats(nil) lacks {x}: {all:?}"
        );
    }
    let mut labelled = Cri::default_container("container-for-stats-with-labels-");
    labelled.labels = [("foo".to_string(), "bar".to_string())].into();
    let lid = c.create_container(&pod, &cfg, labelled).await?;
    c.start(&lid).await?;
    for (v, want) in [("bar", true), ("baz", false)] {
        let got = stats_ids(
            &mut c,
            Some(ContainerStatsFilter {
                label_selector: [("foo".to_string(), v.to_string())].into(),
                ..Default::default()
            }),
        )
        .await?;
        check!(got.contains(&lid) == want, "label foo={v}: {got:?}");
    }
    c.cleanup_pod(&pod).await
}

async fn container_volume(mut c: Cri, symlink: bool) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let host = c.temp_dir(&format!("test{pod}"));
    std::fs::write(host.join("testVolume.file"), "").unwrap();
    let path = if symlink {
        let l = PathBuf::from(format!("{}-symlink", host.display()));
        std::os::unix::fs::symlink(&host, &l).unwrap();
        l
    } else {
        host.clone()
    };
    let p = path.display().to_string();
    let mut ctr = Cri::container(
        "container-with-volume-test-",
        &busybox(),
        &["sh", "-c", "top"],
    );
    ctr.linux = None;
    ctr.mounts = vec![Mount {
        host_path: p.clone(),
        container_path: p.clone(),
        selinux_relabel: true,
        ..Default::default()
    }];
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start_running(&id).await?;
    let out = c.exec_ok(&id, &["ls", "-A", &p]).await?;
    check!(!out.is_empty(), "ls -A {p}: nothing");
    c.cleanup_pod(&pod).await
}

async fn container_log(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.log_pod().await?;
    let mut ctr = Cri::container(
        "container-with-log-test-",
        &busybox(),
        &["echo", "hello World"],
    );
    ctr.linux = None;
    let log = log_to(&mut ctr, Path::new(&cfg.log_directory));
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start(&id).await?;
    c.wait_state(&id, ContainerState::ContainerExited).await?;
    log_has(&log, "hello World\n", "stdout")?;
    c.cleanup_pod(&pod).await
}

async fn container_reopen_log(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.log_pod().await?;
    let mut ctr = Cri::container(
        "container-reopen-log-test-",
        &busybox(),
        &["sh", "-c", "while true; do echo hello World; sleep 1; done"],
    );
    ctr.linux = None;
    let log = log_to(&mut ctr, Path::new(&cfg.log_directory));
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.start(&id).await?;
    let some = |p: PathBuf| async move {
        let e = log_entries(&p)?;
        check!(!e.is_empty(), "{}: empty", p.display());
        Ok(())
    };
    eventually(60, Duration::from_secs(1), || some(log.clone())).await?;
    let renamed = log.with_extension("log.new");
    std::fs::rename(&log, &renamed).map_err(|e| e.to_string())?;
    c.rt.reopen_container_log(ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .ctx("ReopenContainerLog")?;
    check!(
        log.exists(),
        "no new log file right after ReopenContainerLog"
    );
    eventually(60, Duration::from_secs(1), || some(log.clone())).await?;
    let old = log_entries(&renamed)?.len();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = log_entries(&renamed)?.len();
        check!(
            now == old,
            "the old log file still grows: {old} → {now} entries"
        );
    }
    c.cleanup_pod(&pod).await
}

async fn container_oom(mut c: Cri) -> R {
    let (pod, cfg, _gone) = privileged_pod(&mut c, true).await?;
    let mut ctr = Cri::container(
        "OOM-test-",
        &busybox(),
        &["sh", "-c", "dd if=/dev/zero of=/dev/null bs=20M"],
    );
    ctr.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 15 << 20,
            memory_swap_limit_in_bytes: 15 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = c.create_container(&pod, &cfg, ctr).await?;
    c.status_verbose(&id, true).await?;
    c.start(&id).await?;
    let s = c.wait_state(&id, ContainerState::ContainerExited).await?;
    check!(s.reason == "OOMKilled", "reason {:?}: {s:?}", s.reason);
    check!(s.exit_code == 137, "exit code {}", s.exit_code);
    c.cleanup_pod(&pod).await
}

fn mount(src: &Path, dst: &Path, flags: &[&str]) -> R {
    let out = std::process::Command::new("mount")
        .args(flags)
        .arg(src)
        .arg(dst)
        .output()
        .unwrap();
    check!(
        out.status.success(),
        "mount {flags:?} {} {}: {}",
        src.display(),
        dst.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Unmounts (lazily) when dropped, also when the spec fails.
struct Unmount(Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(p)
                .status();
        }
    }
}

async fn mount_propagation(mut c: Cri, p: MountPropagation) -> R {
    let (pod, cfg, _gone) = privileged_pod(&mut c, true).await?;
    let host = c.temp_dir(&format!("test{pod}"));
    let src = host.join("mnt");
    let point = src.join("propagationMnt");
    let flag_dir = host.join("propagationSrcDir");
    std::fs::create_dir_all(&point).unwrap();
    std::fs::create_dir_all(&flag_dir).unwrap();
    std::fs::write(flag_dir.join("flagFile"), "").unwrap();
    let mut umount = Unmount(vec![src.clone()]);
    mount(&src, &src, &["--rbind"])?;
    let kind = if p == MountPropagation::PropagationPrivate {
        "--make-rprivate"
    } else {
        "--make-rshared"
    };
    let out = std::process::Command::new("mount")
        .arg(kind)
        .arg(&src)
        .output()
        .unwrap();
    check!(out.status.success(), "mount {kind}");
    let s = src.display().to_string();
    let mut ctr = Cri::container("mount-propagation-test-", &busybox(), &["sh", "-c", "top"]);
    ctr.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    ctr.mounts = vec![Mount {
        host_path: s.clone(),
        container_path: s.clone(),
        propagation: p as i32,
        ..Default::default()
    }];
    let id = c.create_container(&pod, &cfg, ctr).await?;
    let st = c.status_verbose(&id, true).await?;
    check!(st.mounts.len() == 1, "status mounts: {:?}", st.mounts);
    let m = &st.mounts[0];
    check!(
        m.container_path == s
            && m.host_path == s
            && !m.readonly
            && !m.selinux_relabel
            && m.propagation == p as i32,
        "status mount {m:?}"
    );
    c.start_running(&id).await?;
    // Host to container.
    umount.0.insert(0, point.clone());
    mount(&flag_dir, &point, &["--rbind"])?;
    let out = c
        .exec_ok(&id, &["ls", "-A", &point.display().to_string()])
        .await?;
    let want_in = p != MountPropagation::PropagationPrivate;
    check!(
        out.trim().is_empty() != want_in,
        "host mount seen in the container: {:?} (want {want_in})",
        out
    );
    // Container to host.
    let inner = format!("{s}/containerMntPoint");
    c.exec_ok(&id, &["sh", "-c", &format!("mkdir -p {inner}")])
        .await?;
    c.exec_ok(&id, &["sh", "-c", &format!("mount --bind /etc {inner}")])
        .await?;
    let seen = std::fs::read_dir(&inner)
        .map_err(|e| format!("read {inner}: {e}"))?
        .count();
    let want_out = p == MountPropagation::PropagationBidirectional;
    umount.0.insert(0, PathBuf::from(&inner));
    check!(
        (seen > 0) == want_out,
        "container mount seen on the host: {seen} entries (want {want_out})"
    );
    c.cleanup_pod(&pod).await?;
    drop(umount);
    Ok(())
}

/// critest's createHostPathForRROMount: a host directory with a tmpfs mounted in it.
fn rro_host_path(c: &Cri, pod: &str) -> Result<(PathBuf, Unmount), String> {
    let host = c.temp_dir(&format!("test{pod}"));
    let t = host.join("tmpfs");
    std::fs::create_dir_all(&t).unwrap();
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(&t)
        .output()
        .unwrap();
    check!(out.status.success(), "mount tmpfs");
    Ok((host, Unmount(vec![t])))
}

async fn readonly_mount(mut c: Cri, rro: bool) -> R {
    let features =
        c.rt.status(StatusRequest { verbose: false })
            .await
            .ctx("Status")?
            .runtime_handlers
            .into_iter()
            .find(|h| h.name.is_empty())
            .and_then(|h| h.features);
    check!(
        !rro || features.is_some_and(|f| f.recursive_read_only_mounts),
        "the default handler does not advertise recursive_read_only_mounts"
    );
    let (pod, cfg, _gone) = privileged_pod(&mut c, true).await?;
    let (host, _umount) = rro_host_path(&c, &pod)?;
    let mut ctr = Cri::container("test-mount-", &busybox(), &["sh", "-c", "top"]);
    ctr.linux = None;
    ctr.mounts = vec![Mount {
        host_path: host.display().to_string(),
        container_path: "/mnt".into(),
        readonly: true,
        recursive_read_only: rro,
        selinux_relabel: true,
        ..Default::default()
    }];
    let id = c.create_container(&pod, &cfg, ctr).await?;
    check!(
        c.status_verbose(&id, true).await?.mounts.len() == 1,
        "status mounts"
    );
    c.start_running(&id).await?;
    if rro {
        c.exec_ok(
            &id,
            &[
                "sh",
                "-c",
                "touch /mnt/tmpfs/foo 2>&1 | grep -q \"Read-only file system\"",
            ],
        )
        .await?;
    } else {
        c.exec_ok(&id, &["touch", "/mnt/tmpfs/file"]).await?;
    }
    c.cleanup_pod(&pod).await
}

async fn readonly_mount_rejects(mut c: Cri) -> R {
    let (pod, cfg, _gone) = privileged_pod(&mut c, true).await?;
    let (host, _umount) = rro_host_path(&c, &pod)?;
    for (readonly, p) in [
        (true, MountPropagation::PropagationHostToContainer),
        (true, MountPropagation::PropagationBidirectional),
        (false, MountPropagation::PropagationPrivate),
    ] {
        let mut ctr = Cri::container("test-mount-", &busybox(), &["sh", "-c", "top"]);
        ctr.mounts = vec![Mount {
            host_path: host.display().to_string(),
            container_path: "/mnt".into(),
            readonly,
            recursive_read_only: true,
            selinux_relabel: true,
            propagation: p as i32,
            ..Default::default()
        }];
        let r = c.create_container(&pod, &cfg, ctr).await;
        check!(
            r.is_err(),
            "created: readonly {readonly}, {p:?}, recursive_read_only"
        );
    }
    c.cleanup_pod(&pod).await
}

async fn image_volume_unimplemented(mut c: Cri) -> R {
    let (pod, cfg, _gone) = c.default_pod("create-PodSandbox-for-container-").await?;
    let image = busybox();
    let mut ctr = Cri::container("image-volume-", &image, &["sh", "-c", "top"]);
    ctr.mounts = vec![Mount {
        container_path: "/mnt/image-volume".into(),
        readonly: true,
        image: spec(&image),
        ..Default::default()
    }];
    match c.create_container(&pod, &cfg, ctr).await {
        Ok(id) => return Err(format!("created {id} with an image volume")),
        Err(e) => check!(e.contains("Unimplemented"), "{e}"),
    }
    c.cleanup_pod(&pod).await
}
