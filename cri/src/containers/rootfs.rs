//! A container's root filesystem: its snapshot mounted while something needs it.

use super::*;

impl Manager {
    pub fn rootfs(&self, id: &str) -> PathBuf {
        self.bundle_dir(id).join("rootfs")
    }

    /// Mounts the container's snapshot on `<bundle>/rootfs` unless it is mounted.
    pub(super) fn mount_rootfs(&self, id: &str) -> Result<(), Status> {
        let rootfs = self.rootfs(id);
        std::fs::create_dir_all(&rootfs)
            .map_err(|err| internal(&format!("create {}", rootfs.display()), err))?;
        if is_mountpoint(&rootfs) {
            return Ok(());
        }
        let m = self
            .store
            .snapshots()
            .mounts(id)
            .map_err(|err| internal("container snapshot", err))?;
        m.mount(&rootfs)
            .map_err(|err| internal(&format!("mount {}", rootfs.display()), err))
    }

    /// Unmounts `<bundle>/rootfs` if mounted (the snapshot stays). Failures are logged: `rm`
    /// and the next start try again.
    pub(super) fn unmount_rootfs(&self, id: &str) {
        let rootfs = self.rootfs(id);
        if is_mountpoint(&rootfs) {
            if let Err(err) = berth_imagestore::unmount(&rootfs) {
                tracing::warn!(%id, "unmount {}: {err}", rootfs.display());
            }
        }
    }

    /// The rootfs of a container for `cp`, mounted for the copy if the container does not run;
    /// the lease unmounts it again when the last copy ends and the container still does not run.
    pub async fn rootfs_lease(self: &Arc<Self>, key: &str) -> Result<RootfsLease, Status> {
        let e = self.find(key)?;
        let _op = e.op.lock().await;
        let r = e.get();
        if matches!(r.phase, Phase::Creating | Phase::Removing) {
            return Err(Status::failed_precondition(format!(
                "container {} is being {}",
                r.name,
                if r.phase == Phase::Creating {
                    "created"
                } else {
                    "removed"
                }
            )));
        }
        e.copies.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let lease = RootfsLease {
            m: self.clone(),
            e: e.clone(),
        };
        self.mount_rootfs(&r.id)?;
        Ok(lease)
    }

    // ---------------------------------------------------------------------------------------
    // restart of berthd
}
