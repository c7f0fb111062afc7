//! `attach`, `start -a`, `run` in the foreground and `exec`: the terminal (raw mode, size,
//! signals) and the streams between it and berthd.

use anyhow::Result;
use berth_api::*;
use clap::Args;
use std::io::{IsTerminal, Read, Write};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::*;

/// Raw terminal mode for `-it`, restored on drop.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enable() -> RawMode {
        use nix::sys::termios::*;
        let stdin = std::io::stdin();
        let Ok(orig) = tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

fn term_size() -> (u32, u32) {
    // SAFETY: winsize is plain integers; all zeros is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize.
    if unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0
    {
        (ws.ws_col as u32, ws.ws_row as u32)
    } else {
        (0, 0)
    }
}

/// What a stdin reader sends: data, EOF, or a new terminal size.
pub enum Input {
    Data(Vec<u8>),
    Eof,
    Resize(u32, u32),
}

/// Reads our stdin on a thread (and SIGWINCH with a tty) into a channel.
fn input(stdin: bool, tty: bool) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(16);
    if stdin {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut si = std::io::stdin().lock();
            loop {
                match si.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(Input::Eof);
                        return;
                    }
                    Ok(n) => {
                        if tx.blocking_send(Input::Data(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    if tty {
        tokio::spawn(async move {
            let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while s.recv().await.is_some() {
                let (w, h) = term_size();
                if tx.send(Input::Resize(w, h)).await.is_err() {
                    return;
                }
            }
        });
    }
    rx
}

/// Copies output to our stdout/stderr until the exit message; returns the exit code.
async fn output(mut s: tonic::Streaming<AttachOutput>) -> Result<Option<i32>> {
    let mut so = std::io::stdout();
    let mut se = std::io::stderr();
    while let Some(m) = s.message().await? {
        if !m.stdout.is_empty() {
            so.write_all(&m.stdout)?;
            so.flush()?;
        }
        if !m.stderr.is_empty() {
            se.write_all(&m.stderr)?;
            se.flush()?;
        }
        if m.exited {
            return Ok(Some(m.exit_code));
        }
    }
    Ok(None)
}

/// Forwards SIGINT/SIGTERM to the container (docker's --sig-proxy) while attached without a tty.
fn proxy_signals(mut c: Client, id: String) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut i), Ok(mut t)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            let sig = tokio::select! {
                _ = i.recv() => "SIGINT",
                _ = t.recv() => "SIGTERM",
            };
            let _ = c
                .kill(KillRequest {
                    id: id.clone(),
                    signal: sig.into(),
                })
                .await;
        }
    });
}

/// Attaches (starting the container when `start`) and returns its exit code.
pub async fn attach(ch: &Channel, id: &str, start: bool, stdin: bool, tty: bool) -> Result<i32> {
    let mut c = crate::client::containers(ch.clone());
    let tty = tty && std::io::stdin().is_terminal();
    let (w, h) = if tty { term_size() } else { (0, 0) };
    let (tx, rx) = mpsc::channel(16);
    tx.send(AttachInput {
        id: id.to_string(),
        start,
        width: w,
        height: h,
        ..Default::default()
    })
    .await?;
    let out = c.attach(ReceiverStream::new(rx)).await?.into_inner();
    let _raw = (tty && stdin).then(RawMode::enable);
    let inp = input(stdin, tty);
    forward_input(inp, tx, |i| match i {
        Input::Data(d) => AttachInput {
            stdin: d,
            ..Default::default()
        },
        Input::Eof => AttachInput {
            close_stdin: true,
            ..Default::default()
        },
        Input::Resize(w, h) => AttachInput {
            width: w,
            height: h,
            ..Default::default()
        },
    });
    if !tty {
        proxy_signals(c.clone(), id.to_string());
    }
    match output(out).await? {
        Some(code) => Ok(code),
        None => Ok(c
            .wait(ContainerRef { id: id.to_string() })
            .await?
            .into_inner()
            .exit_code),
    }
}

/// `berth exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Detached mode: run the command in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep STDIN open
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Username or UID
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Give extended privileges to the command
    #[arg(long)]
    pub privileged: bool,
    pub container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

pub async fn exec(ch: &Channel, a: ExecArgs) -> Result<i32> {
    let mut c = crate::client::containers(ch.clone());
    let tty = a.tty && std::io::stdin().is_terminal();
    let (w, h) = if tty { term_size() } else { (0, 0) };
    let (tx, rx) = mpsc::channel(16);
    tx.send(ExecInput {
        id: a.container.clone(),
        cmd: a.command.clone(),
        env: a.env.iter().filter_map(|e| expand_env(e)).collect(),
        user: a.user.clone().unwrap_or_default(),
        workdir: a.workdir.clone().unwrap_or_default(),
        tty: a.tty,
        stdin: a.interactive,
        detach: a.detach,
        width: w,
        height: h,
        privileged: a.privileged,
        ..Default::default()
    })
    .await?;
    let out = c.exec(ReceiverStream::new(rx)).await?.into_inner();
    if a.detach {
        output(out).await?;
        return Ok(0);
    }
    let _raw = (tty && a.interactive).then(RawMode::enable);
    let inp = input(a.interactive, tty);
    forward_input(inp, tx, |i| match i {
        Input::Data(d) => ExecInput {
            data: d,
            ..Default::default()
        },
        Input::Eof => ExecInput {
            close_stdin: true,
            ..Default::default()
        },
        Input::Resize(w, h) => ExecInput {
            width: w,
            height: h,
            ..Default::default()
        },
    });
    Ok(output(out).await?.unwrap_or(126))
}

/// Sends the terminal's input (as `msg` makes it into a request) to berthd, then keeps the
/// request stream open until the output ends.
fn forward_input<T: Send + 'static>(
    mut inp: mpsc::Receiver<Input>,
    tx: mpsc::Sender<T>,
    msg: impl Fn(Input) -> T + Send + 'static,
) {
    tokio::spawn(async move {
        while let Some(i) = inp.recv().await {
            if tx.send(msg(i)).await.is_err() {
                return;
            }
        }
        tx.closed().await;
    });
}
