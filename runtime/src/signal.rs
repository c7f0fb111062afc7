//! Signal names and numbers as runc accepts them: `KILL`, `SIGKILL`, `9`, and the real-time
//! signals by number (`34` … `64`), which have no names.

use crate::{Error, Result};
use nix::sys::signal::Signal;
use std::str::FromStr;

/// The highest signal number Linux has (SIGRTMAX).
const SIGRTMAX: i32 = 64;

/// Parses a signal by name (with or without `SIG`, any case) or number (0 is the liveness
/// probe, 1 to 64 any signal including the real-time ones), as runc's `kill` does.
pub fn parse_number(s: &str) -> Result<i32> {
    let s = s.trim();
    let bad = || Error::Other(format!("unknown signal {s:?}"));
    if let Ok(n) = s.parse::<i32>() {
        return (0..=SIGRTMAX).contains(&n).then_some(n).ok_or_else(bad);
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name)
        .map(|sig| sig as i32)
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!(parse_number("KILL").unwrap(), Signal::SIGKILL as i32);
        assert_eq!(parse_number("sigterm").unwrap(), Signal::SIGTERM as i32);
        assert_eq!(parse_number("9").unwrap(), 9);
        assert_eq!(parse_number("SIGQUIT").unwrap(), Signal::SIGQUIT as i32);
        assert!(parse_number("NOPE")
            .unwrap_err()
            .to_string()
            .contains("NOPE"));
        assert!(parse_number("99").is_err());
    }

    #[test]
    fn real_time_signals_and_the_probe_by_number() {
        assert_eq!(parse_number("34").unwrap(), 34);
        assert_eq!(parse_number("64").unwrap(), 64);
        assert_eq!(parse_number("0").unwrap(), 0);
        assert_eq!(parse_number("HUP").unwrap(), 1);
        assert_eq!(
            parse_number("65").unwrap_err().to_string(),
            "unknown signal \"65\""
        );
        assert_eq!(
            parse_number("SIGFOO").unwrap_err().to_string(),
            "unknown signal \"SIGFOO\""
        );
    }
}
