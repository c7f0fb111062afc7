//! CRI containers on berthd's container manager: each joins its sandbox's network namespace
//! and /etc files, logs to the path the kubelet gives, and is marked with labels that say
//! which sandbox it belongs to (`berth ps` shows them too, named `k8s_<name>_<pod>_…` as
//! dockershim named them).

use crate::api;
use crate::containers::{now_nanos, Manager, Phase, Record};
use crate::cri_spec::{AppArmor, CriLinux, Device, Seccomp};
use crate::pods::Pods;
use berth_imagestore::Store;
use berth_shim::api as shim;
use berth_shim::api::shim_client::ShimClient;
use k8s_cri::v1;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::Status;

const POD: &str = "io.berth.cri.pod";
const NAME: &str = "io.berth.cri.name";
const ATTEMPT: &str = "io.berth.cri.attempt";
const ANNOTATION: &str = "io.berth.cri.annotation/";

fn is_ours(k: &str) -> bool {
    k == POD || k == NAME || k == ATTEMPT || k.starts_with(ANNOTATION)
}

/// The stored name of an image the kubelet names by reference or by id (`sha256:…` of its
/// config, as ImageStatus reported it).
async fn image_name(store: &Store, reference: &str) -> Result<String, Status> {
    if store.image(reference).await.is_ok() {
        return Ok(reference.to_string());
    }
    match crate::cri_service::find_image(store, reference).await? {
        Some((_, recs)) if !recs.is_empty() => Ok(recs[0].name.clone()),
        _ => Err(Status::not_found(format!("image {reference:?} not found"))),
    }
}

pub async fn create(
    m: &Arc<Manager>,
    pods: &Pods,
    store: &Store,
    req: v1::CreateContainerRequest,
) -> Result<String, Status> {
    let (pod, etc_dir) = pods.for_container(&req.pod_sandbox_id)?;
    crate::pods::ensure_pod_cgroup(&pod)?;
    let cfg = req
        .config
        .ok_or_else(|| Status::invalid_argument("CreateContainer: no config"))?;
    let md = cfg
        .metadata
        .clone()
        .filter(|m| !m.name.is_empty())
        .ok_or_else(|| Status::invalid_argument("CreateContainer: no metadata name"))?;
    let reference = cfg
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .filter(|i| !i.is_empty())
        .ok_or_else(|| Status::invalid_argument("CreateContainer: no image"))?;
    let image = image_name(store, &reference).await?;
    let sec = cfg
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let res = cfg.linux.as_ref().and_then(|l| l.resources.clone());
    let user = match (
        &sec.run_as_user,
        &sec.run_as_group,
        sec.run_as_username.as_str(),
    ) {
        (Some(u), Some(g), _) => format!("{}:{}", u.value, g.value),
        (Some(u), None, _) => u.value.to_string(),
        (None, Some(g), name) if !name.is_empty() => format!("{name}:{}", g.value),
        (None, None, name) => name.to_string(),
        // As containerd: a group alone would run as the image's user with another group.
        (None, Some(_), _) => {
            return Err(Status::invalid_argument(
                "CreateContainer: run_as_group is set without run_as_user or run_as_username",
            ))
        }
    };
    let caps = sec.capabilities.clone().unwrap_or_default();
    let mut cri_linux = cri_linux(m, &pod, &sec, res.as_ref())?;
    // Refused now rather than at StartContainer: a profile that is not loaded, or AppArmor
    // that is not there (critest's "should fail with an unloaded profile").
    crate::apparmor::profile_for(&cri_linux.apparmor, sec.privileged)?;
    cri_linux.devices = cfg
        .devices
        .iter()
        .map(|d| Device {
            container_path: d.container_path.clone(),
            host_path: d.host_path.clone(),
            permissions: d.permissions.clone(),
        })
        .collect();
    let mut labels: HashMap<String, String> = cfg.labels.clone();
    for (k, v) in &cfg.annotations {
        labels.insert(format!("{ANNOTATION}{k}"), v.clone());
    }
    labels.insert(POD.into(), pod.id.clone());
    labels.insert(NAME.into(), md.name.clone());
    labels.insert(ATTEMPT.into(), md.attempt.to_string());
    let log_path = if cfg.log_path.is_empty() || pod.log_directory.is_empty() {
        String::new()
    } else {
        let p = Path::new(&pod.log_directory).join(&cfg.log_path);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Status::internal(format!("create {}: {e}", dir.display())))?;
        }
        p.display().to_string()
    };
    let c = api::ContainerConfig {
        name: format!(
            "k8s_{}_{}_{}_{}_{}",
            md.name, pod.name, pod.namespace, pod.uid, md.attempt
        ),
        image,
        entrypoint_set: !cfg.command.is_empty(),
        entrypoint: cfg.command.clone(),
        cmd: cfg.args.clone(),
        env: cfg
            .envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect(),
        workdir: cfg.working_dir.clone(),
        user,
        hostname: pod.hostname.clone(),
        tty: cfg.tty,
        stdin: cfg.stdin,
        network: if pod.host_network {
            "host".into()
        } else {
            String::new()
        },
        netns_path: pod.netns.clone(),
        etc_dir: if pod.host_network {
            String::new()
        } else {
            etc_dir.display().to_string()
        },
        mounts: cfg
            .mounts
            .iter()
            .map(|mt| mount(mt, rro_supported(m)))
            .collect::<Result<_, _>>()?,
        // CPU limits go in cri_linux with the rest of the CRI's resources.
        memory: res.as_ref().map(|r| r.memory_limit_in_bytes).unwrap_or(0),
        read_only: sec.readonly_rootfs,
        privileged: sec.privileged,
        cap_add: caps.add_capabilities.clone(),
        cap_drop: caps.drop_capabilities.clone(),
        stop_timeout: -1,
        labels,
        log_path,
        cri_linux: serde_json::to_string(&cri_linux).expect("json"),
        ..Default::default()
    };
    let r = m.create(c).await?;
    Ok(r.id)
}

/// Whether recursive read-only mounts work: the kernel has mount_setattr, and the OCI runtime
/// knows "rro" (berth-runtime does; another one is asked with `features`, as containerd asks
/// runc; runc before 1.1 would ignore the option). Asked once.
pub fn rro_supported(m: &Manager) -> bool {
    static RRO: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *RRO.get_or_init(|| {
        if !berth_runtime::rootfs::recursive_mount_options_supported() {
            return false;
        }
        let Some(rt) = &m.cfg.runtime else {
            return true;
        };
        let out = std::process::Command::new(rt)
            .arg("features")
            .stderr(std::process::Stdio::null())
            .output();
        let features: serde_json::Value = match out {
            Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).unwrap_or_default(),
            _ => return false,
        };
        features["mountOptions"]
            .as_array()
            .is_some_and(|o| o.iter().any(|x| x == "rro"))
    })
}

/// A CRI mount as berth's: a bind mount, its propagation and recursive read-only as options.
fn mount(mt: &v1::Mount, rro: bool) -> Result<api::Mount, Status> {
    if mt.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
        return Err(Status::unimplemented(format!(
            "CreateContainer: image volumes (the image {:?} mounted at {}) are not implemented \
             by berthd",
            mt.image
                .as_ref()
                .map(|i| i.image.as_str())
                .unwrap_or_default(),
            mt.container_path
        )));
    }
    let propagation = v1::MountPropagation::try_from(mt.propagation)
        .unwrap_or(v1::MountPropagation::PropagationPrivate);
    let mut options = match propagation {
        v1::MountPropagation::PropagationHostToContainer => vec!["rslave".to_string()],
        v1::MountPropagation::PropagationBidirectional => vec!["rshared".to_string()],
        v1::MountPropagation::PropagationPrivate => vec![],
    };
    if mt.recursive_read_only {
        // As the CRI says (and containerd does): only for a read-only mount that receives no
        // mounts from the host later, which would not be read-only.
        if !mt.readonly {
            return Err(Status::invalid_argument(format!(
                "mount {}: recursive_read_only needs readonly",
                mt.container_path
            )));
        }
        if propagation != v1::MountPropagation::PropagationPrivate {
            return Err(Status::invalid_argument(format!(
                "mount {}: recursive_read_only needs private propagation, not {}",
                mt.container_path,
                propagation.as_str_name()
            )));
        }
        if !rro {
            return Err(Status::invalid_argument(format!(
                "mount {}: recursive_read_only needs mount_setattr(2) (Linux 5.12) and an OCI \
                 runtime that knows the \"rro\" option",
                mt.container_path
            )));
        }
        options.push("rro".into());
    }
    Ok(api::Mount {
        r#type: "bind".into(),
        source: mt.host_path.clone(),
        target: mt.container_path.clone(),
        readonly: mt.readonly,
        options,
    })
}

/// The pod's namespaces, sysctls and cgroup parent and the container's security context and
/// resources, beyond what docker's options say.
fn cri_linux(
    m: &Manager,
    pod: &crate::pods::PodRecord,
    sec: &v1::LinuxContainerSecurityContext,
    res: Option<&v1::LinuxContainerResources>,
) -> Result<CriLinux, Status> {
    let node = v1::NamespaceMode::Node as i32;
    let ns = sec
        .namespace_options
        .clone()
        .unwrap_or(v1::NamespaceOption {
            network: pod.ns_modes.0,
            pid: pod.ns_modes.1,
            ipc: pod.ns_modes.2,
            ..Default::default()
        });
    let mut c = CriLinux {
        sysctl: pod.sysctls.clone(),
        cgroup_parent: pod.cgroup_parent.clone(),
        no_new_privs: sec.no_new_privs,
        additional_gids: sec
            .supplemental_groups
            .iter()
            .map(|g| {
                u32::try_from(*g).map_err(|_| {
                    Status::invalid_argument(format!("supplemental group {g} out of range"))
                })
            })
            .collect::<Result<_, _>>()?,
        strict_groups: sec.supplemental_groups_policy
            == v1::SupplementalGroupsPolicy::Strict as i32,
        ..Default::default()
    };
    if ns.ipc == node {
        c.host.push("ipc".into());
    } else if !pod.ipc_ns.is_empty() {
        c.join.insert("ipc".into(), pod.ipc_ns.clone());
    }
    if !pod.uts_ns.is_empty() {
        c.join.insert("uts".into(), pod.uts_ns.clone());
    }
    if ns.pid == node {
        c.host.push("pid".into());
    } else if ns.pid == v1::NamespaceMode::Pod as i32 {
        // The pod's, held by its pause process (a pod made without one: the container's own).
        if let Some(p) = pod.pause() {
            if !p.alive() {
                return Err(Status::failed_precondition(format!(
                    "pod sandbox {}: the init of its PID namespace (pid {}) is gone",
                    pod.id, p.pid
                )));
            }
            c.join.insert("pid".into(), p.ns_path());
        }
    } else if ns.pid == v1::NamespaceMode::Target as i32 {
        // Another running container's of the same pod (an ephemeral container that debugs
        // it, `kubectl debug --target`): its init's namespace, as the target runs now.
        let target = cri_record(m, &ns.target_id).map_err(|_| {
            Status::not_found(format!("target container {:?} not found", ns.target_id))
        })?;
        if target.config.labels.get(POD) != Some(&pod.id) {
            return Err(Status::invalid_argument(format!(
                "target container {} is not in pod sandbox {}",
                target.id, pod.id
            )));
        }
        if target.phase != Phase::Running || target.pid <= 0 {
            return Err(Status::failed_precondition(format!(
                "target container {} is not running",
                target.id
            )));
        }
        c.join
            .insert("pid".into(), format!("/proc/{}/ns/pid", target.pid));
    }
    if !sec.masked_paths.is_empty() {
        c.masked_paths = Some(sec.masked_paths.clone());
    }
    if !sec.readonly_paths.is_empty() {
        c.readonly_paths = Some(sec.readonly_paths.clone());
    }
    #[allow(deprecated)]
    let old_path = sec.seccomp_profile_path.as_str();
    c.seccomp = match &sec.seccomp {
        // Kubelets before 1.20 name the profile in the deprecated seccomp_profile_path only.
        None => match old_path {
            "" | "unconfined" => Seccomp::Unconfined,
            "runtime/default" | "docker/default" => Seccomp::RuntimeDefault,
            p => match p.strip_prefix("localhost/") {
                Some(path) if path.starts_with('/') => Seccomp::Localhost(path.to_string()),
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "seccomp profile path {p:?}: expected runtime/default, unconfined or \
                         localhost/<absolute path>"
                    )))
                }
            },
        },
        Some(p) => match v1::security_profile::ProfileType::try_from(p.profile_type) {
            Ok(v1::security_profile::ProfileType::RuntimeDefault) => Seccomp::RuntimeDefault,
            Ok(v1::security_profile::ProfileType::Unconfined) => Seccomp::Unconfined,
            Ok(v1::security_profile::ProfileType::Localhost) => {
                let path = p.localhost_ref.trim_start_matches("localhost/");
                if !path.starts_with('/') {
                    return Err(Status::invalid_argument(format!(
                        "seccomp profile {:?}: not an absolute path",
                        p.localhost_ref
                    )));
                }
                Seccomp::Localhost(path.to_string())
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown seccomp profile type {}",
                    p.profile_type
                )))
            }
        },
    };
    c.apparmor = apparmor_of(sec)?;
    if let Some(r) = res {
        set_resources(&mut c, r);
    }
    Ok(c)
}

/// The AppArmor profile a container asks for: the SecurityProfile, or from kubelets before
/// 1.30 the deprecated `apparmor_profile` string (`runtime/default`, `unconfined`,
/// `localhost/NAME`).
fn apparmor_of(sec: &v1::LinuxContainerSecurityContext) -> Result<AppArmor, Status> {
    use v1::security_profile::ProfileType;
    #[allow(deprecated)]
    let old = sec.apparmor_profile.as_str();
    let localhost = |name: &str| {
        let name = name.strip_prefix("localhost/").unwrap_or(name);
        if name.is_empty() {
            return Err(Status::invalid_argument(
                "AppArmor profile type Localhost needs the profile's name in localhost_ref",
            ));
        }
        Ok(AppArmor::Localhost(name.to_string()))
    };
    match &sec.apparmor {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(AppArmor::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(AppArmor::Unconfined),
            Ok(ProfileType::Localhost) => localhost(&p.localhost_ref),
            Err(_) => Err(Status::invalid_argument(format!(
                "unknown AppArmor profile type {}",
                p.profile_type
            ))),
        },
        None => match old {
            "" => Ok(AppArmor::Unset),
            "runtime/default" => Ok(AppArmor::RuntimeDefault),
            "unconfined" => Ok(AppArmor::Unconfined),
            p if p.starts_with("localhost/") => localhost(p),
            p => Err(Status::invalid_argument(format!(
                "AppArmor profile {p:?}: expected runtime/default, unconfined or localhost/NAME"
            ))),
        },
    }
}

/// The CRI's LinuxContainerResources (but memory, which stays in ContainerConfig) into `c`.
fn set_resources(c: &mut CriLinux, r: &v1::LinuxContainerResources) {
    c.cpu_shares = u64::try_from(r.cpu_shares).unwrap_or(0);
    c.cpu_period = u64::try_from(r.cpu_period).unwrap_or(0);
    c.cpu_quota = r.cpu_quota;
    c.cpuset_cpus = r.cpuset_cpus.clone();
    c.cpuset_mems = r.cpuset_mems.clone();
    c.oom_score_adj = (r.oom_score_adj != 0).then_some(r.oom_score_adj);
    c.hugepage_limits = r
        .hugepage_limits
        .iter()
        .map(|h| (h.page_size.clone(), h.limit))
        .collect();
    c.unified = r.unified.clone().into_iter().collect();
    c.memory_swap = r.memory_swap_limit_in_bytes;
}

fn state(r: &Record) -> v1::ContainerState {
    match r.phase {
        Phase::Creating | Phase::Created => v1::ContainerState::ContainerCreated,
        Phase::Starting | Phase::Running | Phase::Paused => v1::ContainerState::ContainerRunning,
        Phase::Exited => v1::ContainerState::ContainerExited,
        Phase::Removing => v1::ContainerState::ContainerUnknown,
    }
}

fn metadata(r: &Record) -> v1::ContainerMetadata {
    let l = &r.config.labels;
    v1::ContainerMetadata {
        name: l.get(NAME).cloned().unwrap_or_else(|| r.name.clone()),
        attempt: l.get(ATTEMPT).and_then(|a| a.parse().ok()).unwrap_or(0),
    }
}

fn labels_and_annotations(r: &Record) -> (HashMap<String, String>, HashMap<String, String>) {
    let mut labels = HashMap::new();
    let mut annotations = HashMap::new();
    for (k, v) in &r.config.labels {
        if let Some(a) = k.strip_prefix(ANNOTATION) {
            annotations.insert(a.to_string(), v.clone());
        } else if !is_ours(k) {
            labels.insert(k.clone(), v.clone());
        }
    }
    (labels, annotations)
}

/// A CRI container of berthd's (it has a sandbox label).
fn cri_record(m: &Manager, id: &str) -> Result<Record, Status> {
    let r = m.get(id)?;
    if !r.config.labels.contains_key(POD) {
        return Err(Status::not_found(format!("container {id:?} not found")));
    }
    Ok(r)
}

pub fn status(m: &Manager, id: &str) -> Result<v1::ContainerStatus, Status> {
    let r = cri_record(m, id)?;
    let (labels, annotations) = labels_and_annotations(&r);
    let st = state(&r);
    let reason = if st == v1::ContainerState::ContainerExited {
        if r.reason == "OOMKilled" {
            "OOMKilled".to_string()
        } else if r.exit_code == 0 {
            "Completed".to_string()
        } else {
            "Error".to_string()
        }
    } else {
        String::new()
    };
    Ok(v1::ContainerStatus {
        id: r.id.clone(),
        metadata: Some(metadata(&r)),
        state: st as i32,
        created_at: r.created,
        started_at: r.started_at,
        finished_at: if st == v1::ContainerState::ContainerExited {
            r.finished_at
        } else {
            0
        },
        exit_code: r.exit_code,
        image: Some(v1::ImageSpec {
            image: r.config.image.clone(),
            ..Default::default()
        }),
        image_ref: r.image_id.clone(),
        image_id: r.image_id.clone(),
        reason,
        message: r.error.clone(),
        labels,
        annotations,
        mounts: r
            .config
            .mounts
            .iter()
            .map(|mt| {
                let has = |o: &str| mt.options.iter().any(|x| x == o);
                v1::Mount {
                    container_path: mt.target.clone(),
                    host_path: mt.source.clone(),
                    readonly: mt.readonly,
                    propagation: if has("rshared") {
                        v1::MountPropagation::PropagationBidirectional
                    } else if has("rslave") {
                        v1::MountPropagation::PropagationHostToContainer
                    } else {
                        v1::MountPropagation::PropagationPrivate
                    } as i32,
                    recursive_read_only: has("rro"),
                    ..Default::default()
                }
            })
            .collect(),
        log_path: r.log_path.clone(),
        resources: Some(resources_of(&r)),
        user: user_of(m, &r),
    })
}

/// The user the container's process runs as (uid, gid, every group), from its bundle: what
/// the kubelet reports as the container's user.
fn user_of(m: &Manager, r: &Record) -> Option<v1::ContainerUser> {
    let spec = m.bundle_spec(&r.id).ok()?;
    let u = &spec["process"]["user"];
    Some(v1::ContainerUser {
        linux: Some(v1::LinuxContainerUser {
            uid: u["uid"].as_i64()?,
            gid: u["gid"].as_i64()?,
            supplemental_groups: serde_json::from_value(u["additionalGids"].clone())
                .unwrap_or_default(),
        }),
    })
}

/// The resources the container was given (CreateContainer or the last
/// UpdateContainerResources), for ContainerStatus.
fn resources_of(r: &Record) -> v1::ContainerResources {
    let c: CriLinux = serde_json::from_str(&r.config.cri_linux).unwrap_or_default();
    v1::ContainerResources {
        linux: Some(v1::LinuxContainerResources {
            cpu_period: c.cpu_period as i64,
            cpu_quota: c.cpu_quota,
            cpu_shares: c.cpu_shares as i64,
            memory_limit_in_bytes: r.config.memory,
            oom_score_adj: c.oom_score_adj.unwrap_or(0),
            cpuset_cpus: c.cpuset_cpus,
            cpuset_mems: c.cpuset_mems,
            hugepage_limits: c
                .hugepage_limits
                .into_iter()
                .map(|(page_size, limit)| v1::HugepageLimit { page_size, limit })
                .collect(),
            unified: c.unified.into_iter().collect(),
            memory_swap_limit_in_bytes: c.memory_swap,
        }),
        windows: None,
    }
}

pub fn list(m: &Manager, filter: Option<v1::ContainerFilter>) -> Vec<v1::Container> {
    m.list(true)
        .into_iter()
        .filter(|r| r.config.labels.contains_key(POD))
        .filter(|r| match &filter {
            None => true,
            Some(f) => {
                let (labels, _) = labels_and_annotations(r);
                (f.id.is_empty() || r.id.starts_with(&f.id))
                    && (f.pod_sandbox_id.is_empty()
                        || r.config.labels[POD].starts_with(&f.pod_sandbox_id))
                    && f.state.as_ref().is_none_or(|s| s.state == state(r) as i32)
                    && f.label_selector
                        .iter()
                        .all(|(k, v)| labels.get(k) == Some(v))
            }
        })
        .map(|r| {
            let (labels, annotations) = labels_and_annotations(&r);
            v1::Container {
                id: r.id.clone(),
                pod_sandbox_id: r.config.labels[POD].clone(),
                metadata: Some(metadata(&r)),
                image: Some(v1::ImageSpec {
                    image: r.config.image.clone(),
                    ..Default::default()
                }),
                image_ref: r.image_id.clone(),
                image_id: r.image_id.clone(),
                state: state(&r) as i32,
                created_at: r.created,
                labels,
                annotations,
            }
        })
        .collect()
}

/// The containers of sandbox `pod` (full id).
pub fn of_pod(m: &Manager, pod: &str) -> Vec<String> {
    m.list(true)
        .into_iter()
        .filter(|r| r.config.labels.get(POD).map(String::as_str) == Some(pod))
        .map(|r| r.id)
        .collect()
}

pub async fn stop(m: &Arc<Manager>, id: &str, timeout: i64) -> Result<(), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("StopContainer: no container id"));
    }
    let r = match cri_record(m, id) {
        Ok(r) => r,
        // Stopping what is gone succeeds, as removing it does (critest checks both).
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
        Err(s) => return Err(s),
    };
    m.stop(&r.id, Some(timeout.clamp(0, i32::MAX as i64) as i32), "")
        .await?;
    Ok(())
}

pub async fn remove(m: &Arc<Manager>, id: &str) -> Result<(), Status> {
    match cri_record(m, id) {
        Ok(r) => m.remove(&r.id, true).await,
        // Removing what is gone succeeds (the kubelet retries).
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(s),
    }
}

/// ExecSync (what exec probes call): runs `cmd` in the container, collects its output, and
/// gives its exit code; after `timeout` seconds (0: none) the process is killed and the call
/// fails with DeadlineExceeded.
pub async fn exec_sync(
    m: &Arc<Manager>,
    id: &str,
    cmd: Vec<String>,
    timeout: i64,
) -> Result<v1::ExecSyncResponse, Status> {
    if cmd.is_empty() {
        return Err(Status::invalid_argument("ExecSync: no command"));
    }
    let r = cri_record(m, id)?;
    let (r, mut sh) = m.running_shim(&r.id).await?;
    let spec = m.bundle_spec(&r.id)?;
    let input = api::ExecInput {
        id: r.id.clone(),
        cmd,
        ..Default::default()
    };
    let process = crate::spec::exec_process(&spec, &m.rootfs(&r.id), &input)?;
    let exec_id = format!(
        "sync-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let (in_tx, mut out) = start_exec(&mut sh, &exec_id, &process, false).await?;
    let mut sh2 = sh.clone();
    let eid = exec_id.clone();
    let run = async move {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Ok(Some(msg)) = out.message().await {
            stdout.extend_from_slice(&msg.stdout);
            stderr.extend_from_slice(&msg.stderr);
        }
        let code = sh2
            .wait(shim::ProcessRef { exec_id: eid })
            .await
            .map(|x| x.into_inner().exit_code);
        (stdout, stderr, code)
    };
    let res = if timeout > 0 {
        tokio::time::timeout(std::time::Duration::from_secs(timeout as u64), run).await
    } else {
        Ok(run.await)
    };
    drop(in_tx);
    let outcome = match res {
        Ok((stdout, stderr, Ok(code))) => Ok(v1::ExecSyncResponse {
            stdout,
            stderr,
            exit_code: code,
        }),
        Ok((_, _, Err(e))) => Err(Status::internal(format!("exec: {}", e.message()))),
        Err(_) => {
            kill_exec(&mut sh, &exec_id).await;
            let _ = sh
                .wait(shim::ProcessRef {
                    exec_id: exec_id.clone(),
                })
                .await;
            Err(Status::deadline_exceeded(format!(
                "command timed out after {timeout}s"
            )))
        }
    };
    let _ = sh
        .delete(shim::DeleteRequest {
            exec_id,
            force: true,
        })
        .await;
    outcome
}

/// The CRI event for a change of a CRI container (None for other changes and containers):
/// created, started, stopped (exited) and deleted, with the pod's and its containers' status
/// as the kubelet's evented PLEG wants them.
pub fn event(
    m: &Manager,
    pods: &Pods,
    ev: &crate::containers::Event,
) -> Option<v1::ContainerEventResponse> {
    let r = &ev.record;
    let pod = r.config.labels.get(POD)?;
    let kind = if ev.removed {
        v1::ContainerEventType::ContainerDeletedEvent
    } else {
        match r.phase {
            Phase::Created => v1::ContainerEventType::ContainerCreatedEvent,
            Phase::Running => v1::ContainerEventType::ContainerStartedEvent,
            Phase::Exited => v1::ContainerEventType::ContainerStoppedEvent,
            _ => return None,
        }
    };
    Some(v1::ContainerEventResponse {
        container_id: r.id.clone(),
        container_event_type: kind as i32,
        created_at: now_nanos(),
        pod_sandbox_status: pods.status(pod).ok(),
        containers_statuses: of_pod(m, pod)
            .iter()
            .filter_map(|id| status(m, id).ok())
            .collect(),
    })
}

/// UpdateContainerResources: new cgroup limits for a created or running container (the
/// runtime's `update` through its shim).
pub async fn update_resources(
    m: &Arc<Manager>,
    id: &str,
    res: Option<v1::LinuxContainerResources>,
) -> Result<(), Status> {
    let r = cri_record(m, id)?;
    let Some(res) = res else {
        return Ok(());
    };
    if r.phase == Phase::Exited {
        return Err(Status::failed_precondition(format!(
            "container {} has exited",
            r.id
        )));
    }
    // Recorded for the next start (a created container has no cgroup yet)...
    let mut c: CriLinux = serde_json::from_str(&r.config.cri_linux).unwrap_or_default();
    set_resources(&mut c, &res);
    let json = crate::cri_spec::resources(&c, res.memory_limit_in_bytes);
    m.update_config(&r.id, |cfg| {
        cfg.memory = res.memory_limit_in_bytes;
        cfg.cri_linux = serde_json::to_string(&c).expect("json");
    })?;
    // ...and written to the cgroup of a running one.
    let Ok((_, mut sh)) = m.running_shim(&r.id).await else {
        return Ok(());
    };
    sh.update(berth_shim::api::UpdateRequest {
        resources_json: serde_json::to_vec(&json).expect("json"),
    })
    .await
    .map_err(|e| Status::new(e.code(), e.message().replace('\n', " ")))?;
    Ok(())
}

/// Starts the OCI `process` as exec `exec_id` in the shim's container and attaches to it:
/// the sender takes the client's input (stdin with `stdin`, terminal sizes), the stream gives
/// the output until the process has exited. If the attach fails, the process is killed and
/// forgotten.
pub(crate) async fn start_exec(
    sh: &mut ShimClient<Channel>,
    exec_id: &str,
    process: &serde_json::Value,
    stdin: bool,
) -> Result<
    (
        tokio::sync::mpsc::Sender<shim::AttachIn>,
        tonic::Streaming<shim::AttachOut>,
    ),
    Status,
> {
    sh.exec(shim::ExecRequest {
        exec_id: exec_id.to_string(),
        process_json: serde_json::to_vec(process).expect("json"),
        stdin,
    })
    .await
    .map_err(|e| Status::new(e.code(), e.message().replace('\n', " ")))?;
    let (to_shim, from_us) = tokio::sync::mpsc::channel(16);
    let _ = to_shim
        .send(shim::AttachIn {
            exec_id: exec_id.to_string(),
            ..Default::default()
        })
        .await;
    match crate::containers::attach_shim(sh, from_us).await {
        Ok(out) => Ok((to_shim, out)),
        Err(e) => {
            kill_exec(sh, exec_id).await;
            let _ = sh
                .delete(shim::DeleteRequest {
                    exec_id: exec_id.to_string(),
                    force: true,
                })
                .await;
            Err(e)
        }
    }
}

/// SIGKILL to exec `exec_id` (errors ignored: it may have exited).
pub(crate) async fn kill_exec(sh: &mut ShimClient<Channel>, exec_id: &str) {
    let _ = sh
        .kill(shim::KillRequest {
            exec_id: exec_id.to_string(),
            signal: libc::SIGKILL,
            all: false,
        })
        .await;
}

/// ReopenContainerLog: the kubelet renamed the log to rotate it; the shim writes a new one.
pub async fn reopen_log(m: &Arc<Manager>, id: &str) -> Result<(), Status> {
    let r = cri_record(m, id)?;
    let (_, mut sh) = m.running_shim(&r.id).await.map_err(|e| {
        if e.code() == tonic::Code::NotFound {
            e
        } else {
            Status::failed_precondition(format!("container {} is not running", r.id))
        }
    })?;
    sh.reopen_log(berth_shim::api::Empty {}).await?;
    Ok(())
}

/// Stats of one CRI container: CPU and memory working set (as `berth stats` reads them from
/// the cgroup) while it runs, and its writable layer (the overlay's upper directory).
async fn stats_of(m: &Arc<Manager>, store: &Store, r: &Record) -> v1::ContainerStats {
    let (labels, annotations) = labels_and_annotations(r);
    let now = now_nanos();
    let mut out = v1::ContainerStats {
        attributes: Some(v1::ContainerAttributes {
            id: r.id.clone(),
            metadata: Some(metadata(r)),
            labels,
            annotations,
        }),
        ..Default::default()
    };
    if matches!(r.phase, Phase::Running | Phase::Paused) {
        if let Ok((r, mut sh)) = m.running_shim(&r.id).await {
            if let Ok(js) = sh.stats(berth_shim::api::Empty {}).await {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&js.into_inner().json) {
                    let s = crate::containers_util::stats_sample(&r, &v);
                    out.cpu = Some(v1::CpuUsage {
                        timestamp: now,
                        usage_core_nano_seconds: Some(v1::UInt64Value {
                            value: s.cpu_total_ns,
                        }),
                        ..Default::default()
                    });
                    out.memory = Some(v1::MemoryUsage {
                        timestamp: now,
                        working_set_bytes: Some(v1::UInt64Value {
                            value: s.memory_usage,
                        }),
                        ..Default::default()
                    });
                }
            }
        }
    }
    let upper = store.snapshots().mounts(&r.id).ok().and_then(|spec| {
        spec.options
            .iter()
            .find_map(|o| o.strip_prefix("upperdir=").map(std::path::PathBuf::from))
    });
    if let Some(upper) = upper {
        let u = upper.clone();
        let (bytes, inodes) = tokio::task::spawn_blocking(move || crate::cri_service::usage(&u))
            .await
            .unwrap_or((0, 0));
        out.writable_layer = Some(v1::FilesystemUsage {
            timestamp: now,
            fs_id: Some(v1::FilesystemIdentifier {
                mountpoint: upper.display().to_string(),
            }),
            used_bytes: Some(v1::UInt64Value { value: bytes }),
            inodes_used: Some(v1::UInt64Value { value: inodes }),
        });
    }
    out
}

pub async fn stats(
    m: &Arc<Manager>,
    store: &Store,
    id: &str,
) -> Result<v1::ContainerStats, Status> {
    let r = cri_record(m, id)?;
    Ok(stats_of(m, store, &r).await)
}

pub async fn list_stats(
    m: &Arc<Manager>,
    store: &Store,
    filter: Option<v1::ContainerStatsFilter>,
) -> Vec<v1::ContainerStats> {
    let mut out = Vec::new();
    for r in m.list(true) {
        let Some(pod) = r.config.labels.get(POD) else {
            continue;
        };
        if let Some(f) = &filter {
            let (labels, _) = labels_and_annotations(&r);
            if !(f.id.is_empty() || r.id.starts_with(&f.id))
                || !(f.pod_sandbox_id.is_empty() || pod.starts_with(&f.pod_sandbox_id))
                || !f
                    .label_selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            {
                continue;
            }
        }
        out.push(stats_of(m, store, &r).await);
    }
    out
}

/// `eth0` of the network namespace process `pid` is in: (rx bytes, rx errors, tx bytes,
/// tx errors).
fn eth0_usage(pid: i32) -> Option<(u64, u64, u64, u64)> {
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    dev.lines().skip(2).find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        if name.trim() != "eth0" {
            return None;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        Some((*f.first()?, *f.get(2)?, *f.get(8)?, *f.get(10)?))
    })
}

/// PodSandboxStats: the sum of its containers' CPU and memory, its network (eth0 of the pod's
/// namespace, read through a running container), and each container's stats.
pub async fn pod_stats(
    m: &Arc<Manager>,
    store: &Store,
    pods: &Pods,
    id: &str,
) -> Result<v1::PodSandboxStats, Status> {
    let st = pods.status(id)?;
    let now = now_nanos();
    let (mut cpu, mut mem, mut running_pid) = (0u64, 0u64, None);
    let mut containers = Vec::new();
    for c in of_pod(m, &st.id) {
        let Ok(r) = m.get(&c) else { continue };
        let s = stats_of(m, store, &r).await;
        cpu += s
            .cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds.as_ref())
            .map(|v| v.value)
            .unwrap_or(0);
        mem += s
            .memory
            .as_ref()
            .and_then(|c| c.working_set_bytes.as_ref())
            .map(|v| v.value)
            .unwrap_or(0);
        if r.pid > 0 && matches!(r.phase, Phase::Running | Phase::Paused) {
            running_pid.get_or_insert(r.pid);
        }
        containers.push(s);
    }
    let network = running_pid.and_then(eth0_usage).map(|(rx, rxe, tx, txe)| {
        let eth0 = v1::NetworkInterfaceUsage {
            name: "eth0".into(),
            rx_bytes: Some(v1::UInt64Value { value: rx }),
            rx_errors: Some(v1::UInt64Value { value: rxe }),
            tx_bytes: Some(v1::UInt64Value { value: tx }),
            tx_errors: Some(v1::UInt64Value { value: txe }),
        };
        v1::NetworkUsage {
            timestamp: now,
            default_interface: Some(eth0.clone()),
            interfaces: vec![eth0],
        }
    });
    Ok(v1::PodSandboxStats {
        attributes: Some(v1::PodSandboxAttributes {
            id: st.id.clone(),
            metadata: st.metadata.clone(),
            labels: st.labels.clone(),
            annotations: st.annotations.clone(),
        }),
        linux: Some(v1::LinuxPodSandboxStats {
            cpu: Some(v1::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: Some(v1::UInt64Value { value: cpu }),
                ..Default::default()
            }),
            memory: Some(v1::MemoryUsage {
                timestamp: now,
                working_set_bytes: Some(v1::UInt64Value { value: mem }),
                ..Default::default()
            }),
            network,
            process: None,
            containers,
        }),
        windows: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::security_profile::ProfileType;

    fn sec(profile: Option<(ProfileType, &str)>, old: &str) -> v1::LinuxContainerSecurityContext {
        #[allow(deprecated)]
        v1::LinuxContainerSecurityContext {
            apparmor: profile.map(|(t, r)| v1::SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            }),
            apparmor_profile: old.into(),
            ..Default::default()
        }
    }

    #[test]
    fn apparmor_profiles_from_both_fields() {
        let ok = |p, old| apparmor_of(&sec(p, old)).unwrap();
        assert_eq!(ok(None, ""), AppArmor::Unset);
        assert_eq!(ok(None, "runtime/default"), AppArmor::RuntimeDefault);
        assert_eq!(ok(None, "unconfined"), AppArmor::Unconfined);
        assert_eq!(ok(None, "localhost/p1"), AppArmor::Localhost("p1".into()));
        // The kubelet sends the bare name in localhost_ref; older critest the prefixed one.
        let local = |r| Some((ProfileType::Localhost, r));
        assert_eq!(ok(local("p2"), ""), AppArmor::Localhost("p2".into()));
        assert_eq!(
            ok(local("localhost/p2"), ""),
            AppArmor::Localhost("p2".into())
        );
        // The SecurityProfile wins over the deprecated string.
        assert_eq!(
            ok(Some((ProfileType::Unconfined, "")), "localhost/p1"),
            AppArmor::Unconfined
        );
        assert_eq!(
            ok(Some((ProfileType::RuntimeDefault, "")), ""),
            AppArmor::RuntimeDefault
        );
    }

    #[test]
    fn bad_apparmor_profiles_are_invalid_arguments() {
        for (p, old, want) in [
            (None, "docker-default", "docker-default"),
            (None, "localhost/", "localhost_ref"),
            (Some((ProfileType::Localhost, "")), "", "localhost_ref"),
        ] {
            let e = apparmor_of(&sec(p, old)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(want), "{e:?}");
        }
    }
}
