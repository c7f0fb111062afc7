//! Containers in berthd: records in the metadata database, one berth-shim per running
//! container, networks through CNI, restart policies, and reconciliation after a restart.
//!
//! What is where:
//! - the record (config, phase, exit status, IP, …): `containers` table of `<root>/meta.db`,
//!   rewritten in one transaction at every change;
//! - the bundle (`config.json`, `hosts`, `hostname`, `resolv.conf`, the mounted `rootfs/`):
//!   `<state>/containers/<id>/`;
//! - the shim: `<state>/shims/<short id>/` (socket, pid, exit record); the runtime's state:
//!   `<state>/runtime/<id>/`;
//! - the log: `<log_dir>/<id>.log` in the CRI format.
//!
//! The network and the shim exist only while the container runs: `start` sets them up and the
//! exit of the container tears them down (as docker does), so a stopped container holds only its
//! record, its rootfs snapshot and its log.
//!
//! The manager's verbs by stage: `start` (network, shim, runtime), `exit` (teardown and
//! restart policies), `ops` (stop, kill, wait, remove, pause, update), `rootfs` (the
//! mounted snapshot), `reconcile` (after a restart of berthd); records and creation here.

use crate::api::{ContainerConfig, ContainerSummary, PortMapping};
use crate::network::{self, Network};
use crate::spec;
use berth_imagestore::metadata::Records;
use berth_imagestore::Store;
use berth_shim::api::shim_client::ShimClient;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::Status;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Being created: the snapshot may be half made. A restart removes it.
    Creating,
    #[default]
    Created,
    /// Network and shim being set up. A restart undoes that.
    Starting,
    Running,
    Paused,
    Exited,
    /// Being removed. A restart finishes the job.
    Removing,
}

/// The container record (JSON in the metadata database).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub config: ContainerConfig,
    pub image: String,
    pub image_id: String,
    pub created: i64,
    pub phase: Phase,
    pub pid: i32,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    /// Why it exited when not on its own: "OOMKilled", "shim died", …
    pub reason: String,
    /// The last start's error, if it failed.
    pub error: String,
    pub restart_count: u32,
    /// `stop` or `kill` by the user: restart policies leave it alone.
    pub manually_stopped: bool,
    /// A restart by policy is scheduled.
    pub restarting: bool,
    pub ip: String,
    pub netns: String,
    /// Host ports in use while running (with 0 resolved to the port picked).
    pub ports: Vec<PortMapping>,
    pub args: Vec<String>,
    pub stop_signal: String,
    pub log_path: String,
}

struct Entry {
    rec: Mutex<Record>,
    /// Serializes start, exit handling and removal.
    op: tokio::sync::Mutex<()>,
    /// (number of exits seen, last exit code).
    exits: watch::Sender<(u64, i32)>,
    /// Attach streams still pumping output: exit handling waits for them before the shim goes.
    attaches: watch::Sender<usize>,
    /// `cp` calls using the rootfs of a container that is not running (mounted for them).
    copies: std::sync::atomic::AtomicUsize,
}

/// See [`Manager::rootfs_lease`].
pub struct RootfsLease {
    m: Arc<Manager>,
    e: Arc<Entry>,
}

impl RootfsLease {
    pub fn path(&self) -> PathBuf {
        self.m.rootfs(&self.e.get().id)
    }
}

impl Drop for RootfsLease {
    fn drop(&mut self) {
        let (m, e) = (self.m.clone(), self.e.clone());
        let release = async move {
            let _op = e.op.lock().await;
            let last = e.copies.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1;
            let r = e.get();
            if last && matches!(r.phase, Phase::Created | Phase::Exited) {
                m.unmount_rootfs(&r.id);
            }
        };
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(release);
        }
    }
}

impl Entry {
    fn get(&self) -> Record {
        self.rec.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Daemon settings for containers (the `[daemon]` and `[network]` sections of config.toml).
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub state: PathBuf,
    pub log_dir: PathBuf,
    pub shim: PathBuf,
    /// A runc-compatible binary for the shims to drive; None: the runtime library.
    pub runtime: Option<PathBuf>,
    pub network: network::NetworkOptions,
}

pub struct Manager {
    pub store: Store,
    pub cfg: Config,
    net: Network,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    events: tokio::sync::broadcast::Sender<Event>,
}

/// A container changed phase, or was removed (`removed`, with its last record).
#[derive(Debug, Clone)]
pub struct Event {
    pub record: Record,
    pub removed: bool,
}

pub use berth_time::now_nanos;

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}").replace('\n', " "))
}

/// Length of the short id that `ps` shows and that names the shim directory.
const SHORT: usize = 12;

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    hex::encode(b)
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nifty", "proud", "quiet", "sharp", "swift", "tender", "vivid", "witty", "zen", "bold",
];
const NOUNS: &[&str] = &[
    "anchor", "buoy", "cove", "dock", "ferry", "harbor", "jetty", "keel", "lagoon", "mast", "pier",
    "quay", "reef", "sail", "tide", "wharf", "barge", "canal", "delta", "estuary",
];

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        // The kubelet's names (k8s_<container>_<pod>_<namespace>_<uid>_<attempt>) can be
        // 400 bytes long.
        && n.len() <= 1024
}

/// docker's status column: "Up 3 minutes", "Exited (0) 2 seconds ago", …
pub fn human_duration(nanos: i64) -> String {
    let s = (nanos / 1_000_000_000).max(0);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

fn status_text(r: &Record) -> String {
    let now = now_nanos();
    match r.phase {
        Phase::Creating | Phase::Created | Phase::Starting => "Created".into(),
        Phase::Running => format!("Up {}", human_duration(now - r.started_at)),
        Phase::Paused => format!("Up {} (Paused)", human_duration(now - r.started_at)),
        Phase::Exited if r.restarting => format!(
            "Restarting ({}) {} ago",
            r.exit_code,
            human_duration(now - r.finished_at)
        ),
        Phase::Exited => format!(
            "Exited ({}) {} ago",
            r.exit_code,
            human_duration(now - r.finished_at)
        ),
        Phase::Removing => "Removal In Progress".into(),
    }
}

fn state_word(r: &Record) -> &'static str {
    match r.phase {
        Phase::Creating | Phase::Created | Phase::Starting => "created",
        Phase::Running => "running",
        Phase::Paused => "paused",
        Phase::Exited if r.restarting => "restarting",
        Phase::Exited => "exited",
        Phase::Removing => "removing",
    }
}

pub fn summary(r: &Record) -> ContainerSummary {
    ContainerSummary {
        id: r.id.clone(),
        name: r.name.clone(),
        image: r.config.image.clone(),
        command: r.args.join(" "),
        created_unix: r.created / 1_000_000_000,
        state: state_word(r).into(),
        status: status_text(r),
        ports: if r.ports.is_empty() {
            r.config.ports.clone()
        } else {
            r.ports.clone()
        },
        exit_code: r.exit_code,
        ip: r.ip.clone(),
        pid: if matches!(r.phase, Phase::Running | Phase::Paused) {
            r.pid
        } else {
            0
        },
        labels: r.config.labels.clone(),
    }
}

/// Parses `SIGTERM`, `TERM`, `15` (the runtime's parser; signal 0, its liveness probe, is no
/// signal to send here).
pub fn parse_signal(s: &str) -> Result<i32, Status> {
    match berth_runtime::signal::parse_number(s) {
        Ok(n) if n != 0 => Ok(n),
        _ => Err(Status::invalid_argument(format!("invalid signal: {s:?}"))),
    }
}

mod exit;
mod ops;
mod reconcile;
mod rootfs;
mod start;

impl Manager {
    /// Opens the manager and reconciles the records with what is really there: live shims,
    /// exited containers, and whatever an interrupted operation left.
    pub async fn open(store: Store, cfg: Config) -> anyhow::Result<Arc<Manager>> {
        for d in [
            cfg.state.join("containers"),
            cfg.state.join("shims"),
            cfg.state.join("runtime"),
            cfg.log_dir.clone(),
        ] {
            std::fs::create_dir_all(&d)
                .map_err(|e| anyhow::anyhow!("create {}: {e}", d.display()))?;
        }
        let net = Network::bridge(cfg.network.clone());
        let m = Arc::new(Manager {
            store,
            cfg,
            net,
            entries: Mutex::new(HashMap::new()),
            events: tokio::sync::broadcast::channel(1024).0,
        });
        let records = m
            .store
            .metadata()
            .records(Records::Containers)
            .map_err(|e| anyhow::anyhow!("read container records: {e}"))?;
        for (id, bytes) in records {
            match serde_json::from_slice::<Record>(&bytes) {
                Ok(r) => {
                    m.insert(r);
                }
                Err(e) => tracing::error!(%id, "unreadable container record, left alone: {e}"),
            }
        }
        let entries: Vec<Arc<Entry>> = m.entries().into_values().collect();
        for e in entries {
            m.clone().reconcile(e).await;
        }
        Ok(m)
    }

    fn entries(&self) -> HashMap<String, Arc<Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn insert(&self, r: Record) -> Arc<Entry> {
        let e = Arc::new(Entry {
            rec: Mutex::new(r.clone()),
            op: tokio::sync::Mutex::new(()),
            exits: watch::channel((0, r.exit_code)).0,
            attaches: watch::channel(0).0,
            copies: std::sync::atomic::AtomicUsize::new(0),
        });
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(r.id.clone(), e.clone());
        e
    }

    fn bundle_dir(&self, id: &str) -> PathBuf {
        self.cfg.state.join("containers").join(id)
    }
    /// `<state>/shims/<short id>`: short, because the shim's sockets live there and a unix
    /// socket path has at most 107 bytes.
    fn shim_dir(&self, id: &str) -> PathBuf {
        self.cfg
            .state
            .join("shims")
            .join(&id[..SHORT.min(id.len())])
    }
    fn runtime_root(&self) -> PathBuf {
        self.cfg.state.join("runtime")
    }

    /// Applies `f` to the record and writes it (one transaction).
    fn update(&self, e: &Entry, f: impl FnOnce(&mut Record)) -> Result<Record, Status> {
        let mut g = e.rec.lock().unwrap_or_else(|e| e.into_inner());
        let mut r = g.clone();
        f(&mut r);
        let bytes = serde_json::to_vec(&r).map_err(|e| internal("encode record", e))?;
        self.store
            .metadata()
            .put_record(Records::Containers, &r.id, &bytes)
            .map_err(|e| internal("write container record", e))?;
        let changed = g.phase != r.phase;
        *g = r.clone();
        drop(g);
        if changed {
            let _ = self.events.send(Event {
                record: r.clone(),
                removed: false,
            });
        }
        Ok(r)
    }

    /// Finds a container by id, unique id prefix or name.
    fn find(&self, key: &str) -> Result<Arc<Entry>, Status> {
        let key = key.trim_start_matches('/');
        let entries = self.entries();
        if let Some(e) = entries.get(key) {
            return Ok(e.clone());
        }
        if let Some(e) = entries.values().find(|e| e.get().name == key) {
            return Ok(e.clone());
        }
        let matches: Vec<&Arc<Entry>> = if key.len() >= 3 {
            entries
                .iter()
                .filter(|(id, _)| id.starts_with(key))
                .map(|(_, e)| e)
                .collect()
        } else {
            Vec::new()
        };
        match matches.len() {
            1 => Ok(matches[0].clone()),
            0 => Err(Status::not_found(format!("No such container: {key}"))),
            _ => Err(Status::invalid_argument(format!(
                "multiple containers match {key:?}: give more of the id"
            ))),
        }
    }

    pub fn get(&self, key: &str) -> Result<Record, Status> {
        Ok(self.find(key)?.get())
    }

    pub fn list(&self, all: bool) -> Vec<Record> {
        let mut v: Vec<Record> = self
            .entries()
            .values()
            .map(|e| e.get())
            .filter(|r| all || matches!(r.phase, Phase::Running | Phase::Paused) || r.restarting)
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.created));
        v
    }

    // ---------------------------------------------------------------------------------------
    // create

    pub async fn create(&self, mut c: ContainerConfig) -> Result<Record, Status> {
        if c.image.is_empty() {
            return Err(Status::invalid_argument("no image given"));
        }
        let img = self.store.image(&c.image).await.map_err(|e| match e {
            berth_imagestore::Error::ImageNotFound(_) => Status::not_found(format!(
                "No such image: {} (pull it with: berth pull {})",
                c.image, c.image
            )),
            e => crate::images::status(e),
        })?;
        let image_cfg = self
            .store
            .config(&img.name)
            .await
            .map_err(crate::images::status)?;
        for p in &c.ports {
            if !matches!(p.protocol.as_str(), "tcp" | "udp") {
                return Err(Status::invalid_argument(format!(
                    "invalid protocol {:?} for port {}: tcp or udp",
                    p.protocol, p.container_port
                )));
            }
            if p.container_port == 0 || p.container_port > 65535 || p.host_port > 65535 {
                return Err(Status::invalid_argument(format!(
                    "invalid port mapping {}:{}",
                    p.host_port, p.container_port
                )));
            }
        }
        match c.network.as_str() {
            "" => c.network = "bridge".into(),
            "bridge" | "none" => {}
            "host" => {
                if !c.ports.is_empty() {
                    return Err(Status::invalid_argument(
                        "published ports are discarded with --network host: drop -p",
                    ));
                }
            }
            n => {
                return Err(Status::invalid_argument(format!(
                    "network {n:?} not found (bridge, host or none)"
                )))
            }
        }
        if let Some(r) = &c.restart {
            if !matches!(
                r.name.as_str(),
                "" | "no" | "on-failure" | "always" | "unless-stopped"
            ) {
                return Err(Status::invalid_argument(format!(
                    "invalid restart policy {:?}: no, on-failure[:N], always or unless-stopped",
                    r.name
                )));
            }
            if c.auto_remove && !matches!(r.name.as_str(), "" | "no") {
                return Err(Status::invalid_argument(
                    "conflicting options: --restart and --rm",
                ));
            }
        }
        spec::capabilities(&c)?;
        if c.cri_linux.is_empty() {
            // Refused now rather than at start: an unknown option, or a profile that cannot
            // be applied here.
            let opts = spec::security_opts(&c)?;
            crate::apparmor::profile_for(&opts.apparmor, c.privileged)?;
        }
        let args = spec::args(&c, &image_cfg)?;
        for m in &c.mounts {
            if (m.r#type == "bind" || m.r#type.is_empty()) && !Path::new(&m.source).exists() {
                return Err(Status::invalid_argument(format!(
                    "invalid volume: bind source path does not exist: {}",
                    m.source
                )));
            }
        }

        let entries = self.entries();
        // The short id (12 digits, as `ps` shows) names the shim directory, whose socket paths
        // must fit in a sockaddr_un: keep it unique.
        let id = loop {
            let id = random_hex(32);
            if !entries.keys().any(|k| k.starts_with(&id[..SHORT])) {
                break id;
            }
        };
        let name = {
            if c.name.is_empty() {
                let mut n;
                loop {
                    let r = random_hex(2);
                    let a = ADJECTIVES
                        [usize::from_str_radix(&r[..2], 16).unwrap_or(0) % ADJECTIVES.len()];
                    let b = NOUNS[usize::from_str_radix(&r[2..], 16).unwrap_or(0) % NOUNS.len()];
                    n = format!("{a}_{b}");
                    if entries.values().all(|e| e.get().name != n) {
                        break;
                    }
                    n = format!("{a}_{b}_{}", &random_hex(2)[..3]);
                    if entries.values().all(|e| e.get().name != n) {
                        break;
                    }
                }
                n
            } else {
                let n = c.name.trim_start_matches('/').to_string();
                if !valid_name(&n) {
                    return Err(Status::invalid_argument(format!(
                        "invalid container name {n:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-], at most 1024 of them, are allowed"
                    )));
                }
                if let Some(other) = entries.values().find(|e| e.get().name == n) {
                    return Err(Status::already_exists(format!(
                        "the container name \"/{n}\" is already in use by container {}: remove (or rename) that container to reuse the name",
                        &other.get().id[..12]
                    )));
                }
                n
            }
        };
        c.name = name.clone();
        let rec = Record {
            id: id.clone(),
            name,
            image: img.name.clone(),
            image_id: img.config.to_string(),
            created: now_nanos(),
            phase: Phase::Creating,
            args,
            stop_signal: if c.stop_signal.is_empty() {
                image_cfg.stop_signal.clone().unwrap_or_default()
            } else {
                c.stop_signal.clone()
            },
            log_path: if c.log_path.is_empty() {
                self.cfg
                    .log_dir
                    .join(format!("{id}.log"))
                    .display()
                    .to_string()
            } else {
                c.log_path.clone()
            },
            config: c,
            ..Default::default()
        };
        // The record first: a crash from here on leaves a `creating` record that the next
        // start removes along with whatever part of the snapshot exists.
        let entry = self.insert(rec.clone());
        if let Err(e) = self.update(&entry, |_| {}) {
            self.entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(e);
        }
        let made = async {
            let bundle = self.bundle_dir(&id);
            let rootfs = bundle.join("rootfs");
            std::fs::create_dir_all(&rootfs)
                .map_err(|e| internal(&format!("create {}", rootfs.display()), e))?;
            let mount = self
                .store
                .rootfs_for(&img.name, &id)
                .await
                .map_err(crate::images::status)?;
            mount
                .mount(&rootfs)
                .map_err(|e| internal(&format!("mount {}", rootfs.display()), e))?;
            // The user and working directory must make sense in this image.
            spec::build(&spec::Inputs {
                id: &id,
                config: &rec.config,
                image: &image_cfg,
                rootfs: &rootfs,
                etc_dir: None,
                netns: spec::NetNs::New,
                hostname: "x",
            })?;
            // Mounted only while it runs (or is copied from), as docker does.
            self.unmount_rootfs(&id);
            Ok::<(), Status>(())
        }
        .await;
        if let Err(e) = made {
            self.destroy(&entry).await;
            return Err(e);
        }
        let r = self.update(&entry, |r| r.phase = Phase::Created)?;
        tracing::info!(id = %r.id, name = %r.name, image = %r.image, "container created");
        Ok(r)
    }

    /// Removes everything of a container that is not running: rootfs mount, snapshot, bundle,
    /// log, record.
    async fn destroy(&self, e: &Entry) {
        let r = e.get();
        let _ = self.update(e, |r| r.phase = Phase::Removing);
        let bundle = self.bundle_dir(&r.id);
        let rootfs = bundle.join("rootfs");
        if is_mountpoint(&rootfs) {
            if let Err(err) = berth_imagestore::unmount(&rootfs) {
                tracing::warn!(id = %r.id, "unmount {}: {err}", rootfs.display());
            }
        }
        match self.store.remove_rootfs(&r.id).await {
            Ok(()) => {}
            Err(err) if err.to_string().contains("not found") => {}
            Err(err) => tracing::warn!(id = %r.id, "remove snapshot: {err}"),
        }
        let _ = std::fs::remove_dir_all(&bundle);
        let _ = std::fs::remove_dir_all(self.shim_dir(&r.id));
        // A log the kubelet named is the kubelet's to rotate and remove.
        if r.config.log_path.is_empty() {
            let _ = std::fs::remove_file(&r.log_path);
        }
        let _ = self
            .store
            .metadata()
            .remove_record(Records::Containers, &r.id);
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&r.id);
        // A container whose create failed was never announced.
        if r.phase != Phase::Creating {
            let _ = self.events.send(Event {
                record: r,
                removed: true,
            });
        }
    }

    /// Phase changes and removals of containers from now on (a receiver that falls more than
    /// 1024 behind loses the oldest).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Images used by containers (rmi refuses them).
    pub fn images_in_use(&self) -> Vec<(String, String)> {
        self.entries()
            .values()
            .map(|e| {
                let r = e.get();
                (r.image, r.id)
            })
            .collect()
    }

    // ---------------------------------------------------------------------------------------
    // start

    /// Ports other running containers hold.
    fn ports_in_use(&self, except: &str) -> Vec<(u32, String)> {
        self.entries()
            .values()
            .map(|e| e.get())
            .filter(|r| {
                r.id != except
                    && matches!(r.phase, Phase::Running | Phase::Paused | Phase::Starting)
            })
            .flat_map(|r| r.ports.into_iter().map(|p| (p.host_port, p.protocol)))
            .collect()
    }
}

/// Keeps an attach counted while output is pumped.
pub struct AttachGuard(Arc<Entry>);

impl Drop for AttachGuard {
    fn drop(&mut self) {
        self.0.attaches.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// docker's back-off: 100 ms doubling per restart, at most a minute; a container that ran for
/// 10 s or more starts again at once.
fn backoff(restarts: u32, ran_nanos: i64) -> Duration {
    if ran_nanos >= 10_000_000_000 {
        return Duration::from_millis(100);
    }
    Duration::from_millis((100u64 << restarts.min(10)).min(60_000))
}

/// Tells a shim to delete its container (forcibly) and to exit; errors are ignored (it may be
/// gone already).
async fn discard_shim(shim: &mut ShimClient<Channel>) {
    let _ = shim
        .delete(berth_shim::api::DeleteRequest {
            exec_id: String::new(),
            force: true,
        })
        .await;
    let _ = shim.shutdown(berth_shim::api::Empty {}).await;
}

/// Opens the shim's Attach stream and waits until it says it is attached.
pub async fn attach_shim(
    shim: &mut ShimClient<Channel>,
    stdin: tokio::sync::mpsc::Receiver<berth_shim::api::AttachIn>,
) -> Result<tonic::Streaming<berth_shim::api::AttachOut>, Status> {
    let mut out = shim
        .attach(tokio_stream::wrappers::ReceiverStream::new(stdin))
        .await?
        .into_inner();
    match out.message().await? {
        Some(m) if m.attached => Ok(out),
        _ => Err(Status::internal("the shim did not attach")),
    }
}

fn is_mountpoint(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = p.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

/// Waits (at most `limit`) until the shim `pid` of container `id` has exited: a pidfd says
/// when, without polling; /proc is polled where pidfds are missing (Linux < 5.3).
async fn wait_shim_gone(pid: i32, id: &str, limit: Duration) {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: pidfd_open(2) returns a new descriptor we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd >= 0 {
        // SAFETY: fd was just returned by pidfd_open and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // The pid may have been reused before the pidfd was opened: it must still be ours.
        if !is_our_shim(pid, id) {
            return;
        }
        // SAFETY: the AsyncFd owns `fd`, an open descriptor that stays the same until it drops.
        let afd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        if let Ok(afd) = afd {
            let _ = tokio::time::timeout(limit, afd.readable()).await;
            return;
        }
    }
    let deadline = tokio::time::Instant::now() + limit;
    while is_our_shim(pid, id) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether `pid` is the berth-shim of `id` (checked before ending it: we end only our own).
fn is_our_shim(pid: i32, id: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"berth-shim"))
                && args.contains(&id.as_bytes())
        })
        .unwrap_or(false)
}

/// A free host port, as docker picks one for `-p 80`.
fn free_port(protocol: &str) -> std::io::Result<u16> {
    if protocol == "udp" {
        Ok(std::net::UdpSocket::bind("0.0.0.0:0")?.local_addr()?.port())
    } else {
        Ok(std::net::TcpListener::bind("0.0.0.0:0")?
            .local_addr()?
            .port())
    }
}
