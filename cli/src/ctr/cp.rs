//! `cp`: a tar stream in either direction between the host and a container.

use anyhow::{anyhow, bail, Context, Result};
use berth_api::*;
use std::io::Write;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::*;

/// `berth cp`: one side is `CONTAINER:PATH`.
pub async fn cp(c: &mut Client, src: &str, dst: &str) -> Result<()> {
    let split = |s: &str| -> Option<(String, String)> {
        if s.starts_with('/') || s.starts_with('.') {
            return None;
        }
        let (c, p) = s.split_once(':')?;
        Some((c.to_string(), p.to_string()))
    };
    match (split(src), split(dst)) {
        (Some((ctr, path)), None) => {
            let mut s = c
                .copy_from(CopyFromRequest { id: ctr, path })
                .await?
                .into_inner();
            let dest = std::path::Path::new(dst);
            let (dir, rename) = if dest.is_dir() {
                (dest.to_path_buf(), None)
            } else {
                let parent = dest
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                if !parent.is_dir() {
                    bail!("destination directory {} does not exist", parent.display());
                }
                let tmp = parent.join(format!(".berth-cp-{}", std::process::id()));
                std::fs::create_dir(&tmp)?;
                (tmp, Some(dest.to_path_buf()))
            };
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
            let d2 = dir.clone();
            let job = std::thread::spawn(move || -> Result<Vec<std::path::PathBuf>> {
                let r = berth_api::wire::ChanReader::new(rx);
                let mut a = tar::Archive::new(r);
                a.set_preserve_permissions(true);
                let mut tops = Vec::new();
                for e in a.entries()? {
                    let mut e = e?;
                    let p = e.path()?.into_owned();
                    if let Some(std::path::Component::Normal(t)) = p.components().next() {
                        let t = std::path::PathBuf::from(t);
                        if !tops.contains(&t) {
                            tops.push(t);
                        }
                    }
                    e.unpack_in(&d2)?;
                }
                Ok(tops)
            });
            let mut err = None;
            loop {
                match s.message().await {
                    Ok(Some(ch)) => {
                        if tx.send(ch.data).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            drop(tx);
            let tops = job.join().map_err(|_| anyhow!("copy failed"))?;
            let res = match (err, tops) {
                (Some(e), _) => Err(e.into()),
                (None, Err(e)) => Err(e),
                (None, Ok(tops)) => match &rename {
                    Some(dest) => {
                        if tops.len() != 1 {
                            Err(anyhow!("unexpected archive from berthd"))
                        } else {
                            std::fs::rename(dir.join(&tops[0]), dest)
                                .with_context(|| format!("copy to {}", dest.display()))
                        }
                    }
                    None => Ok(()),
                },
            };
            if rename.is_some() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            res
        }
        (None, Some((ctr, path))) => {
            let srcp = std::path::Path::new(src);
            let md = std::fs::symlink_metadata(srcp)
                .with_context(|| format!("no such file or directory: {src}"))?;
            let name = srcp
                .file_name()
                .map(|n| n.to_owned())
                .unwrap_or_else(|| ".".into());
            let (tx, rx) = mpsc::channel(16);
            tx.send(CopyToInput {
                id: ctr,
                path,
                data: vec![],
            })
            .await?;
            let src_owned = srcp.to_path_buf();
            let txb = tx.clone();
            let job = std::thread::spawn(move || -> Result<()> {
                let w = std::io::BufWriter::with_capacity(64 << 10, ChanWrite(txb));
                let mut b = tar::Builder::new(w);
                b.follow_symlinks(false);
                if md.is_dir() {
                    b.append_dir_all(&name, &src_owned)?;
                } else {
                    b.append_path_with_name(&src_owned, &name)?;
                }
                b.into_inner()?.flush()?;
                Ok(())
            });
            drop(tx);
            let res = c.copy_to(ReceiverStream::new(rx)).await;
            job.join().map_err(|_| anyhow!("copy failed"))??;
            res?;
            Ok(())
        }
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("one of SRC and DEST must be CONTAINER:PATH"),
    }
}

struct ChanWrite(mpsc::Sender<CopyToInput>);

impl Write for ChanWrite {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(CopyToInput {
                data: b.to_vec(),
                ..Default::default()
            })
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "berthd went away"))?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
