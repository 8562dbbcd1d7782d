//! Where the generator may connect: only loopback addresses unless the
//! operator says otherwise, so that a mistyped address never sends load to
//! someone else's machine.

use anyhow::{bail, Context};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Whether an address is on this machine's loopback interface (127.0.0.0/8,
/// ::1, or 127.x written as an IPv4-mapped IPv6 address).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Resolves `host:port` strings (several may be given comma-separated) and
/// refuses any that resolves to a non-loopback address unless
/// `allow_remote`. Each entry keeps its first resolved address.
pub async fn resolve_targets(
    specs: &[String],
    allow_remote: bool,
) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for spec in specs.iter().flat_map(|s| s.split(',')) {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(spec)
            .await
            .with_context(|| format!("resolving {spec} (expected HOST:PORT)"))?
            .collect();
        let Some(first) = addrs.first().copied() else {
            bail!("{spec} resolves to no address");
        };
        check_allowed(spec, &addrs, allow_remote)?;
        out.push(first);
    }
    if out.is_empty() {
        bail!("no address given");
    }
    Ok(out)
}

/// Refuses non-loopback addresses unless `allow_remote`.
pub fn check_allowed(spec: &str, addrs: &[SocketAddr], allow_remote: bool) -> anyhow::Result<()> {
    if allow_remote {
        return Ok(());
    }
    if let Some(bad) = addrs.iter().find(|a| !is_loopback(a.ip())) {
        bail!(
            "{spec} resolves to {bad}, which is not a loopback address; \
             pass --allow-remote to load a server on another machine you are responsible for"
        );
    }
    Ok(())
}

/// The local address connection `i` binds to when connections are spread
/// over `spread` loopback source addresses (127.0.1.1, 127.0.1.2, ...), so
/// that a server's per-address connection limit does not cap the run. Only
/// for IPv4 loopback targets; `None` means "let the OS choose".
pub fn spread_source(target: SocketAddr, spread: usize, i: usize) -> Option<IpAddr> {
    if spread == 0 || !matches!(target.ip(), IpAddr::V4(v4) if v4.is_loopback()) {
        return None;
    }
    let j = i % spread.min(250 * 250);
    let third = 1 + (j / 250) as u8;
    let fourth = 1 + (j % 250) as u8;
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, third, fourth)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(is_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_loopback("127.9.8.7".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("10.0.0.1".parse().unwrap()));
        assert!(!is_loopback("192.168.1.1".parse().unwrap()));
        assert!(!is_loopback("0.0.0.0".parse().unwrap()));
        assert!(!is_loopback("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!is_loopback("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn remote_needs_permission() {
        let remote: SocketAddr = "10.1.2.3:5222".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:5222".parse().unwrap();
        assert!(check_allowed("x", &[local], false).is_ok());
        assert!(check_allowed("x", &[local, remote], false).is_err());
        assert!(check_allowed("x", &[remote], true).is_ok());
    }

    #[tokio::test]
    async fn resolves_lists_and_refuses_remote() {
        let got = resolve_targets(&["127.0.0.1:1,127.0.0.2:2".into(), "[::1]:3".into()], false)
            .await
            .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], "127.0.0.2:2".parse().unwrap());
        assert!(resolve_targets(&["192.0.2.1:5222".into()], false)
            .await
            .is_err());
        assert!(resolve_targets(&[], false).await.is_err());
        assert!(resolve_targets(&["no-port".into()], false).await.is_err());
    }

    #[test]
    fn spread_sources_stay_on_loopback() {
        let t: SocketAddr = "127.0.0.1:5222".parse().unwrap();
        assert_eq!(spread_source(t, 0, 5), None);
        assert_eq!(spread_source(t, 3, 4), Some("127.0.1.2".parse().unwrap()));
        assert_eq!(
            spread_source(t, 1000, 251),
            Some("127.0.2.2".parse().unwrap())
        );
        let v6: SocketAddr = "[::1]:5222".parse().unwrap();
        assert_eq!(spread_source(v6, 3, 4), None);
        for i in 0..70_000 {
            assert!(is_loopback(spread_source(t, 100_000, i).unwrap()));
        }
    }
}
