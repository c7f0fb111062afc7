//! berth-shim's API (`proto/berth/shim/v1/shim.proto`) and what berthd needs to find and talk to
//! a shim: the layout of a shim directory, the exit record, and a client over the unix socket.

pub mod api {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("berth.shim.v1");
}

use std::path::{Path, PathBuf};

/// The socket a shim serves its API on, inside its directory.
pub const SOCKET: &str = "shim.sock";
/// The shim's pid, written once it serves.
pub const PID_FILE: &str = "shim.pid";
/// The container's exit record (JSON, temp file + rename), written when its init exits.
pub const EXIT_FILE: &str = "exit.json";

/// The exit record on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    pub signal: i32,
    pub exited_at_unix_nano: i64,
    #[serde(default)]
    pub reason: String,
}

impl ExitRecord {
    /// Reads `<dir>/exit.json`; None if the container has not exited (or the shim never wrote it).
    pub fn read(dir: &Path) -> Option<ExitRecord> {
        let b = std::fs::read(dir.join(EXIT_FILE)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// Writes `<dir>/exit.json` atomically.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(".exit.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).expect("serializable"))?;
        std::fs::rename(&tmp, dir.join(EXIT_FILE))
    }
}

/// Connects to the shim serving in `dir`.
pub async fn connect(
    dir: &Path,
) -> Result<api::shim_client::ShimClient<tonic::transport::Channel>, tonic::transport::Error> {
    let path: PathBuf = dir.join(SOCKET);
    let channel = tonic::transport::Endpoint::try_from("http://berth-shim")?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await?;
    Ok(api::shim_client::ShimClient::new(channel))
}
