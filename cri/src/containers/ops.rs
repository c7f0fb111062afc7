//! What the front doors ask of a created or running container: stop, kill, wait, remove,
//! pause, update, and a running container's shim and spec.

use super::*;

impl Manager {
    /// docker stop: the stop signal, `timeout` seconds, then SIGKILL.
    pub async fn stop(
        &self,
        key: &str,
        timeout: Option<i32>,
        signal: &str,
    ) -> Result<Record, Status> {
        let e = self.find(key)?;
        // A start under way (a start request, or a restart by policy) holds the entry's lock
        // until the container runs or failed to: wait for it, so that this stop stops what it
        // started instead of returning while it starts (a kubelet would then find it running
        // after a StopContainer that succeeded). The lock is not kept: the exit this stop waits
        // for is recorded under it.
        let r = {
            let _op = e.op.lock().await;
            self.update(&e, |r| {
                r.manually_stopped = true;
                r.restarting = false;
            })?
        };
        if !matches!(r.phase, Phase::Running | Phase::Paused) {
            return Ok(r);
        }
        let sig = if !signal.is_empty() {
            parse_signal(signal)?
        } else if !r.stop_signal.is_empty() {
            parse_signal(&r.stop_signal)?
        } else {
            libc::SIGTERM
        };
        let timeout = timeout
            .or((r.config.stop_timeout > 0).then_some(r.config.stop_timeout))
            .unwrap_or(10);
        let mut exits = e.exits.subscribe();
        let seen = exits.borrow().0;
        let mut shim = self.shim(&r.id).await?;
        if r.phase == Phase::Paused {
            let _ = shim.resume(berth_shim::api::Empty {}).await;
        }
        let _ = shim
            .kill(berth_shim::api::KillRequest {
                exec_id: String::new(),
                signal: sig,
                all: false,
            })
            .await;
        let waited = tokio::time::timeout(
            Duration::from_secs(timeout.max(0) as u64),
            exits.wait_for(|(n, _)| *n != seen),
        )
        .await
        .map(|r| r.is_ok());
        if waited.is_err() {
            let _ = shim
                .kill(berth_shim::api::KillRequest {
                    exec_id: String::new(),
                    signal: libc::SIGKILL,
                    all: true,
                })
                .await;
            let mut exits = e.exits.subscribe();
            if exits.borrow().0 == seen {
                let _ = tokio::time::timeout(
                    Duration::from_secs(30),
                    exits.wait_for(|(n, _)| *n != seen),
                )
                .await;
            }
        }
        // Exit handling may have removed it (--rm).
        Ok(self.find(key).map(|e| e.get()).unwrap_or(r))
    }

    pub async fn kill(&self, key: &str, signal: &str) -> Result<(), Status> {
        let e = self.find(key)?;
        let r = e.get();
        if !matches!(r.phase, Phase::Running | Phase::Paused) {
            return Err(Status::failed_precondition(format!(
                "cannot kill container {}: it is not running",
                r.name
            )));
        }
        let sig = if signal.is_empty() {
            libc::SIGKILL
        } else {
            parse_signal(signal)?
        };
        if sig == libc::SIGKILL || sig == libc::SIGTERM {
            self.update(&e, |r| r.manually_stopped = true)?;
        }
        let mut shim = self.shim(&r.id).await?;
        shim.kill(berth_shim::api::KillRequest {
            exec_id: String::new(),
            signal: sig,
            all: false,
        })
        .await?;
        Ok(())
    }

    /// docker wait: the exit code of the next (or last) exit.
    pub async fn wait(&self, key: &str) -> Result<i32, Status> {
        let e = self.find(key)?;
        let mut exits = e.exits.subscribe();
        let seen = exits.borrow().0;
        let r = e.get();
        if !matches!(r.phase, Phase::Running | Phase::Paused | Phase::Starting) && !r.restarting {
            return Ok(r.exit_code);
        }
        let v = exits
            .wait_for(|(n, _)| *n != seen)
            .await
            .map_err(|_| Status::aborted("berthd is shutting down"))?;
        Ok(v.1)
    }

    /// The exit of the next exit, subscribed before starting something.
    pub fn exit_watch(&self, key: &str) -> Result<watch::Receiver<(u64, i32)>, Status> {
        Ok(self.find(key)?.exits.subscribe())
    }

    pub async fn remove(self: &Arc<Self>, key: &str, force: bool) -> Result<(), Status> {
        let e = self.find(key)?;
        let r = e.get();
        if matches!(r.phase, Phase::Running | Phase::Paused | Phase::Starting) {
            if !force {
                return Err(Status::failed_precondition(format!(
                    "cannot remove container {}: it is running (stop it first, or use rm -f)",
                    r.name
                )));
            }
            self.update(&e, |r| {
                r.manually_stopped = true;
                r.config.auto_remove = false;
            })?;
            let mut exits = e.exits.subscribe();
            let seen = exits.borrow().0;
            if let Ok(mut shim) = self.shim(&r.id).await {
                let _ = shim
                    .kill(berth_shim::api::KillRequest {
                        exec_id: String::new(),
                        signal: libc::SIGKILL,
                        all: true,
                    })
                    .await;
            }
            let waited =
                tokio::time::timeout(Duration::from_secs(30), exits.wait_for(|(n, _)| *n != seen))
                    .await
                    .map(|r| r.is_ok());
            if waited.is_err() {
                // The exit never came (a wedged shim): tear down by hand.
                let _op = e.op.lock().await;
                self.teardown(&e, true).await;
            }
        }
        let _op = e.op.lock().await;
        self.update(&e, |r| r.restarting = false)?;
        self.destroy(&e).await;
        tracing::info!(id = %r.id, name = %r.name, "container removed");
        Ok(())
    }

    pub async fn pause(&self, key: &str, pause: bool) -> Result<(), Status> {
        let e = self.find(key)?;
        let r = e.get();
        let want = if pause { Phase::Running } else { Phase::Paused };
        if r.phase != want {
            return Err(Status::failed_precondition(format!(
                "container {} is {}, not {}",
                r.name,
                state_word(&r),
                if pause { "running" } else { "paused" }
            )));
        }
        let mut shim = self.shim(&r.id).await?;
        if pause {
            shim.pause(berth_shim::api::Empty {}).await?;
        } else {
            shim.resume(berth_shim::api::Empty {}).await?;
        }
        self.update(&e, |r| {
            r.phase = if pause { Phase::Paused } else { Phase::Running }
        })?;
        Ok(())
    }

    /// Changes the recorded config of container `key` (what its next start uses).
    pub fn update_config(
        &self,
        key: &str,
        f: impl FnOnce(&mut ContainerConfig),
    ) -> Result<Record, Status> {
        let e = self.find(key)?;
        self.update(&e, |r| f(&mut r.config))
    }

    pub async fn running_shim(&self, key: &str) -> Result<(Record, ShimClient<Channel>), Status> {
        let e = self.find(key)?;
        let r = e.get();
        if !matches!(r.phase, Phase::Running | Phase::Paused) {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                r.name
            )));
        }
        let shim = self.shim(&r.id).await?;
        Ok((r, shim))
    }

    pub fn bundle_spec(&self, id: &str) -> Result<serde_json::Value, Status> {
        let p = self.bundle_dir(id).join("config.json");
        let b = std::fs::read(&p).map_err(|err| internal(&format!("read {}", p.display()), err))?;
        serde_json::from_slice(&b).map_err(|err| internal("parse config.json", err))
    }
}
