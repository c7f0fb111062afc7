//! A container's exit: recording it, tearing down what its start set up, and restart policies.

use super::*;

impl Manager {
    /// The container exited (or its shim died): record it, tear down the shim and the network,
    /// then apply --rm or the restart policy.
    pub(super) async fn handle_exit(
        self: &Arc<Self>,
        e: &Arc<Entry>,
        exit: Option<berth_shim::api::ExitStatus>,
    ) {
        let _op = e.op.lock().await;
        let r = e.get();
        if !matches!(r.phase, Phase::Running | Phase::Paused | Phase::Starting) {
            return;
        }
        // Let attached clients drain the last output first.
        let mut att = e.attaches.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(2), att.wait_for(|n| *n == 0)).await;
        let shim_dir = self.shim_dir(&r.id);
        let (code, reason, at) = match &exit {
            Some(x) => (x.exit_code, x.reason.clone(), x.exited_at_unix_nano),
            None => match berth_shim::ExitRecord::read(&shim_dir) {
                // The shim wrote the exit before it went.
                Some(x) => (x.exit_code, x.reason, x.exited_at_unix_nano),
                None => (137, "shim died".to_string(), now_nanos()),
            },
        };
        self.teardown(e, true).await;
        let r = match self.update(e, |r| {
            r.phase = Phase::Exited;
            r.exit_code = code;
            r.reason = reason.clone();
            r.finished_at = if at > 0 { at } else { now_nanos() };
            r.pid = 0;
            r.ports.clear();
            r.ip.clear();
            r.netns.clear();
        }) {
            Ok(r) => r,
            Err(err) => {
                tracing::error!(id = %r.id, "record the exit: {err}");
                return;
            }
        };
        tracing::info!(id = %r.id, name = %r.name, exit_code = code, reason = %reason, "container exited");
        let notify = || {
            e.exits.send_modify(|(n, c)| {
                *n += 1;
                *c = code;
            })
        };
        if r.config.auto_remove {
            // `run --rm` returns once the container is gone, as docker's does.
            drop(_op);
            self.destroy(e).await;
            notify();
            return;
        }
        notify();
        if self.should_restart(&r, false) {
            let _ = self.update(e, |r| r.restarting = true);
            let delay = backoff(r.restart_count, r.finished_at - r.started_at);
            self.schedule_restart(e, delay);
        }
    }

    pub(super) fn should_restart(&self, r: &Record, daemon_start: bool) -> bool {
        let Some(p) = &r.config.restart else {
            return false;
        };
        match p.name.as_str() {
            "always" => daemon_start || !r.manually_stopped,
            "unless-stopped" => !r.manually_stopped,
            "on-failure" => {
                !r.manually_stopped
                    && r.exit_code != 0
                    && (p.max_retries == 0 || r.restart_count < p.max_retries)
            }
            _ => false,
        }
    }

    /// Restarts by policy after `delay`, retrying with back-off while starting fails.
    pub(super) fn schedule_restart(self: &Arc<Self>, e: &Arc<Entry>, delay: Duration) {
        let me = self.clone();
        let e = e.clone();
        tokio::spawn(async move {
            let mut delay = delay;
            loop {
                tokio::time::sleep(delay).await;
                match me.restart_by_policy(&e).await {
                    Some(d) => delay = d,
                    None => return,
                }
            }
        });
    }

    /// One restart attempt; Some(delay) to try again.
    pub(super) async fn restart_by_policy(self: &Arc<Self>, e: &Arc<Entry>) -> Option<Duration> {
        let _op = e.op.lock().await;
        let r = e.get();
        if r.phase != Phase::Exited || !r.restarting || r.manually_stopped {
            let _ = self.update(e, |r| r.restarting = false);
            return None;
        }
        let _ = self.update(e, |r| r.restart_count += 1);
        let res = match self.spawn(e).await {
            Ok(mut shim) => self.finish_start(e, &mut shim).await.map(|_| ()),
            Err(err) => Err(err),
        };
        let Err(err) = res else {
            return None;
        };
        tracing::warn!(id = %r.id, "restart failed: {}", err.message());
        let r = self.update(e, |r| r.restarting = false).ok()?;
        if self.should_restart(&r, false) {
            let _ = self.update(e, |r| r.restarting = true);
            return Some(backoff(r.restart_count, 0));
        }
        None
    }

    /// Removes the shim, the runtime's state and the network of a container that has exited
    /// (or never got going). Idempotent.
    pub(super) async fn teardown(&self, e: &Entry, _exited: bool) {
        let r = e.get();
        let shim_dir = self.shim_dir(&r.id);
        let shim_pid = std::fs::read_to_string(shim_dir.join(berth_shim::PID_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        let mut shim_gone = true;
        if shim_dir.join(berth_shim::SOCKET).exists() {
            if let Ok(mut shim) = berth_shim::connect(&shim_dir).await {
                discard_shim(&mut shim).await;
            } else {
                shim_gone = false;
            }
        }
        if !shim_gone {
            // The shim is not answering: end it (by the pid it wrote; it is ours).
            if let Some(pid) = shim_pid.filter(|p| is_our_shim(*p, &r.id)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Done when the shim is: no berth process of this container outlives its teardown
        // (and a restart's new shim never meets the old one in the same directory).
        if let Some(pid) = shim_pid {
            wait_shim_gone(pid, &r.id, Duration::from_secs(2)).await;
        }
        // Whatever the shim did not get to: the runtime's state, the cgroup, the processes.
        let root = self.runtime_root();
        let id = r.id.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if root.join(&id).exists() {
                if let Err(err) = berth_runtime::container::delete::delete(&root, &id, true) {
                    tracing::warn!(%id, "runtime delete: {err}");
                }
            }
        })
        .await;
        let _ = std::fs::remove_dir_all(&shim_dir);
        if e.copies.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            self.unmount_rootfs(&r.id);
        }
        if (r.config.network == "bridge" || r.config.network.is_empty())
            && r.config.netns_path.is_empty()
        {
            let ns = (!r.netns.is_empty()).then(|| PathBuf::from(&r.netns));
            if let Err(err) = self.net.del(&r.id, ns.as_deref()).await {
                tracing::warn!(id = %r.id, "network teardown: {err:#}");
            }
            if let Err(err) = self.net.remove_netns(&r.id) {
                tracing::warn!(id = %r.id, "remove network namespace: {err:#}");
            }
            if !self.entries().values().any(|o| {
                o.get().id != r.id
                    && matches!(
                        o.get().phase,
                        Phase::Running | Phase::Paused | Phase::Starting
                    )
            }) {
                if let Err(err) = self.net.remove_bridge_if_unused() {
                    tracing::warn!("remove bridge: {err:#}");
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // stop, kill, wait, remove
}
