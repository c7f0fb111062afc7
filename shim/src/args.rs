//! The command line:
//! `berth-shim --id ID --bundle DIR --dir SHIMDIR --runtime-root ROOT [--runtime BIN] [--log PATH]
//! [--stdin] [--tty]` (parsed by hand: it is small, and so is the shim).

use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "usage: berth-shim --id ID --bundle DIR --dir SHIMDIR --runtime-root ROOT \
[--runtime BIN] [--log PATH] [--stdin] [--tty]";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    pub id: String,
    pub bundle: PathBuf,
    pub dir: PathBuf,
    pub runtime_root: PathBuf,
    /// A runc-compatible binary; None: the runtime library, in process.
    pub runtime: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub stdin: bool,
    pub tty: bool,
}

pub enum Parsed {
    Run(Args),
    Help,
    Version,
}

pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    let mut a = Args::default();
    let (mut id, mut bundle, mut dir, mut root) = (None, None, None, None);
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let s = arg
            .to_str()
            .ok_or_else(|| format!("argument {arg:?} is not valid UTF-8"))?
            .to_string();
        let (name, inline) = match s.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(OsString::from(v))),
            _ => (s.clone(), None),
        };
        let mut value = |name: &str| -> Result<OsString, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match name.as_str() {
            "--id" => {
                id = Some(
                    value("--id")?
                        .into_string()
                        .map_err(|v| format!("--id {v:?} is not valid UTF-8"))?,
                )
            }
            "--bundle" => bundle = Some(PathBuf::from(value("--bundle")?)),
            "--dir" => dir = Some(PathBuf::from(value("--dir")?)),
            "--runtime-root" => root = Some(PathBuf::from(value("--runtime-root")?)),
            "--runtime" => a.runtime = Some(PathBuf::from(value("--runtime")?)),
            "--log" => a.log = Some(PathBuf::from(value("--log")?)),
            "--stdin" if inline.is_none() => a.stdin = true,
            "--tty" if inline.is_none() => a.tty = true,
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            _ => return Err(format!("unexpected argument {s:?} (see --help)")),
        }
    }
    fn need<T>(v: Option<T>, name: &str) -> Result<T, String> {
        v.ok_or_else(|| format!("{name} is required"))
    }
    a.id = need(id, "--id")?;
    a.bundle = need(bundle, "--bundle")?;
    a.dir = need(dir, "--dir")?;
    a.runtime_root = need(root, "--runtime-root")?;
    if a.id.is_empty() {
        return Err("--id is empty".into());
    }
    Ok(Parsed::Run(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<Args, String> {
        match parse(v.iter().map(OsString::from))? {
            Parsed::Run(a) => Ok(a),
            _ => Err("not run".into()),
        }
    }

    #[test]
    fn parses() {
        let a = p(&[
            "--id",
            "c1",
            "--bundle=/b",
            "--dir",
            "/s",
            "--runtime-root",
            "/r",
            "--tty",
            "--log",
            "/l/c.log",
        ])
        .unwrap();
        assert_eq!(a.id, "c1");
        assert_eq!(a.bundle, PathBuf::from("/b"));
        assert_eq!(a.dir, PathBuf::from("/s"));
        assert_eq!(a.runtime_root, PathBuf::from("/r"));
        assert_eq!(a.log, Some(PathBuf::from("/l/c.log")));
        assert!(a.tty && !a.stdin && a.runtime.is_none());
        assert!(p(&["--id", "x"])
            .unwrap_err()
            .contains("--bundle is required"));
        assert!(p(&["--bogus"]).is_err());
        assert!(p(&["--id"]).is_err());
    }
}
