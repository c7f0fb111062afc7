//! After a restart of berthd: the records matched with what is really there.

use super::*;

impl Manager {
    pub(super) async fn reconcile(self: Arc<Self>, e: Arc<Entry>) {
        let r = e.get();
        match r.phase {
            Phase::Creating | Phase::Removing => {
                tracing::info!(id = %r.id, phase = ?r.phase, "finishing an interrupted create/remove");
                self.teardown(&e, false).await;
                self.destroy(&e).await;
            }
            Phase::Created => {}
            Phase::Starting => {
                tracing::info!(id = %r.id, "undoing an interrupted start");
                let _op = e.op.lock().await;
                self.teardown(&e, false).await;
                let _ = self.update(&e, |r| {
                    r.phase = if r.started_at == 0 {
                        Phase::Created
                    } else {
                        Phase::Exited
                    };
                    r.error = "berthd stopped during start".into();
                    r.ports.clear();
                });
            }
            Phase::Running | Phase::Paused => match self.shim(&r.id).await {
                Ok(mut shim) => match shim
                    .state(berth_shim::api::StateRequest {
                        exec_id: String::new(),
                    })
                    .await
                {
                    Ok(st) => {
                        let st = st.into_inner();
                        if st.status == "stopped" {
                            self.handle_exit(&e, st.exit).await;
                        } else {
                            let phase = if st.status == "paused" {
                                Phase::Paused
                            } else {
                                Phase::Running
                            };
                            let _ = self.update(&e, |r| {
                                r.phase = phase;
                                r.pid = st.pid as i32;
                            });
                            tracing::info!(id = %r.id, name = %r.name, "reconnected to the shim");
                            self.clone().monitor(e.clone(), shim);
                        }
                    }
                    Err(_) => self.handle_exit(&e, None).await,
                },
                Err(_) => {
                    tracing::warn!(id = %r.id, name = %r.name, "the shim is gone");
                    self.handle_exit(&e, None).await;
                }
            },
            Phase::Exited => {
                if self.should_restart(&r, true) {
                    // docker: `always` brings back even a stopped container when the daemon
                    // starts; starting it ends the "manually stopped" mark.
                    let _ = self.update(&e, |r| {
                        r.restarting = true;
                        r.manually_stopped = false;
                    });
                    self.schedule_restart(&e, Duration::ZERO);
                }
            }
        }
    }
}
