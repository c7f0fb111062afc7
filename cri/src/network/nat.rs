//! What the plugins leave in iptables and how berth removes it.

use anyhow::{anyhow, bail, Result};

use super::*;

/// Whether the filter table's FORWARD chain accepts by default (if it drops, e.g. with
/// docker installed, the firewall plugin must let the containers' traffic through).
pub(super) fn forward_policy_accepts(v6: bool) -> bool {
    let bin = if v6 { "ip6tables" } else { "iptables" };
    match std::process::Command::new(bin)
        .args(["-w", "-t", "filter", "-S", "FORWARD", "1"])
        .env("PATH", search_path())
        .stderr(std::process::Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => {
            let s = String::from_utf8_lossy(&o.stdout);
            !s.contains("-P FORWARD DROP") && !s.contains("-P FORWARD REJECT")
        }
        _ => true,
    }
}

/// Removes nat chain `chain` and every rule that jumps to it, in both address families, if it
/// is there. Used only with per-container chain names ([`cni_chain_name`]).
pub(super) async fn remove_nat_chain(chain: &str) -> Result<()> {
    for (save, ipt) in [
        ("iptables-save", "iptables"),
        ("ip6tables-save", "ip6tables"),
    ] {
        let out = match tokio::process::Command::new(save)
            .args(["-t", "nat"])
            .env("PATH", search_path())
            .stderr(std::process::Stdio::null())
            .output()
            .await
        {
            Ok(o) if o.status.success() => o.stdout,
            _ => continue, // no such tool or no nat table: nothing of ours there
        };
        let text = String::from_utf8_lossy(&out);
        let decl = format!(":{chain} ");
        if !text.lines().any(|l| l.starts_with(&decl)) {
            continue;
        }
        for line in text.lines() {
            let Some(rule) = line.strip_prefix("-A ") else {
                continue;
            };
            let words = split_rule(rule);
            let jumps = words
                .windows(2)
                .any(|w| (w[0] == "-j" || w[0] == "-g") && w[1] == chain);
            if words.first().map(String::as_str) == Some(chain) || !jumps {
                continue;
            }
            let mut args = vec!["-w".to_string(), "-t".into(), "nat".into(), "-D".into()];
            args.extend(words);
            run_quiet(ipt, &args).await?;
        }
        for op in ["-F", "-X"] {
            let args = ["-w", "-t", "nat", op, chain].map(String::from);
            run_quiet(ipt, &args).await?;
        }
        tracing::debug!(chain, "removed a leftover masquerade chain");
    }
    Ok(())
}

pub(super) async fn run_quiet(bin: &str, args: &[String]) -> Result<()> {
    let out = tokio::process::Command::new(bin)
        .args(args)
        .env("PATH", search_path())
        .output()
        .await
        .map_err(|e| anyhow!("{bin} {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{bin} {}: {}",
            args.join(" "),
            one_line(&String::from_utf8_lossy(&out.stderr))
        );
    }
    Ok(())
}

/// Splits a rule as iptables-save prints it (double quotes, backslash escapes).
pub(super) fn split_rule(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}
