//! The connection to berthd.

use anyhow::{anyhow, Result};
use berth_api::containers_client::ContainersClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// `unix:///run/berth/berthd.sock` or a plain path.
pub fn socket_path(host: &str) -> String {
    host.strip_prefix("unix://").unwrap_or(host).to_string()
}

/// The containers API on the same connection.
pub fn containers(ch: Channel) -> ContainersClient<Channel> {
    ContainersClient::new(ch).max_decoding_message_size(64 << 20)
}

pub async fn channel(host: &str) -> Result<Channel> {
    let path = socket_path(host);
    let p = path.clone();
    let channel = Endpoint::try_from("http://berthd")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .map_err(|_| {
            anyhow!("cannot connect to berthd at {path}: is it running? (start it with: berthd &)")
        })?;
    Ok(channel)
}
