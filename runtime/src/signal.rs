//! Signal names and numbers as runc accepts them: `KILL`, `SIGKILL`, `9`.

use crate::{Error, Result};
use nix::sys::signal::Signal;
use std::str::FromStr;

/// Parses a signal by name (with or without `SIG`, any case) or number.
pub fn parse(s: &str) -> Result<Signal> {
    let bad = || Error::Other(format!("invalid signal {s:?}"));
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!(parse("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse("SIGQUIT").unwrap(), Signal::SIGQUIT);
        assert!(parse("NOPE").unwrap_err().to_string().contains("NOPE"));
        assert!(parse("99").is_err());
    }
}
