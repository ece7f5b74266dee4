//! `[multicast]`: the group stored objects fan out on, and the interface that carries it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::error::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [multicast] table")]
pub(super) struct RawMulticast {
    group: Option<Spanned<String>>,
    interface: Option<Spanned<String>>,
    ttl: Option<Spanned<u64>>,
    loopback: Option<Spanned<bool>>,
    rate_mbit: Option<Spanned<u64>>,
}

/// The `[multicast]` section: a client sends stored objects to `group`, storages join it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulticastConfig {
    /// The group address and UDP port (`multicast.group`), IPv4 (`"239.1.2.3:7200"`) or IPv6
    /// (`"[ff15::1:2]:7200"`).
    pub group: SocketAddr,
    /// The interface that sends and joins (`multicast.interface`).
    pub interface: MulticastInterface,
    /// Hops a datagram may take (`multicast.ttl`, default 1: the local segment only).
    pub ttl: u32,
    /// Whether the host's own members receive what it sends (`multicast.loopback`, default
    /// true, as the kernel does; nodes sharing a host need it).
    pub loopback: bool,
    /// The rate a client's sender paces its datagrams at, in megabits per second
    /// (`multicast.rate_mbit`; none: unpaced, as fast as the receivers read). A paced sender
    /// also sends Reed-Solomon parity as the loss its receivers report calls for, and
    /// repairs losses several receivers share with parity on demand, so that on a lossy path
    /// most objects arrive whole without a repair round trip. Set it on a WAN, to the
    /// uplink's rate or below; on a LAN or loopback an unpaced sender is faster (parity's
    /// coding costs the receivers CPU). Storages ignore it.
    pub rate_mbit: Option<u32>,
}

/// The interface of the multicast socket, by name or (IPv4 only) by one of its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MulticastInterface {
    /// An interface name such as `lo` or `eth0`, resolved when the socket is made.
    Name(String),
    /// An IPv4 address of the interface, as `IP_MULTICAST_IF` and `IP_ADD_MEMBERSHIP` take it.
    Address(Ipv4Addr),
}

impl fmt::Display for MulticastInterface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Address(address) => write!(f, "{address}"),
        }
    }
}

impl MulticastConfig {
    /// Default `ttl`: datagrams stay on the local segment.
    pub const DEFAULT_TTL: u32 = 1;

    /// The highest `rate_mbit`: 100 Gbit/s.
    pub const MAX_RATE_MBIT: u32 = 100_000;

    pub(super) fn check(
        raw: Spanned<RawMulticast>,
        check: &Checker<'_>,
    ) -> Result<Self, ConfigError> {
        let section = Some(raw.span());
        let raw = raw.into_inner();
        let group = check.required(
            raw.group,
            "multicast.group",
            section.clone(),
            "the group objects are sent to, e.g. \"239.1.2.3:7200\"",
        )?;
        let group = check_group(check, &group)?;
        let interface = check.required(
            raw.interface,
            "multicast.interface",
            section,
            "the interface that carries the group, e.g. \"lo\", \"eth0\" or \"127.0.0.1\"",
        )?;
        let interface = check_interface(check, &interface, group)?;
        let ttl = match raw.ttl {
            None => Self::DEFAULT_TTL,
            Some(ttl) => match u32::try_from(*ttl.get_ref()) {
                Ok(value @ 1..=255) => value,
                _ => {
                    return Err(check.invalid(
                        "multicast.ttl",
                        &ttl,
                        ttl.get_ref(),
                        "1 to 255 (1 keeps datagrams on the local segment)",
                    ));
                }
            },
        };
        let rate_mbit = match raw.rate_mbit {
            None => None,
            Some(rate) => match u32::try_from(*rate.get_ref()) {
                Ok(value @ 1..=Self::MAX_RATE_MBIT) => Some(value),
                _ => {
                    return Err(check.invalid(
                        "multicast.rate_mbit",
                        &rate,
                        rate.get_ref(),
                        "megabits per second, 1 to 100000 (leave it out for an unpaced sender)",
                    ));
                }
            },
        };
        Ok(Self {
            group,
            interface,
            ttl,
            loopback: raw.loopback.is_none_or(|loopback| *loopback.get_ref()),
            rate_mbit,
        })
    }
}

fn check_group(check: &Checker<'_>, value: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
    let shown = format!("{:?}", value.get_ref());
    let text = value.get_ref().trim();
    let group: SocketAddr = match text.parse() {
        Ok(group) => group,
        Err(_) if text.parse::<IpAddr>().is_ok() => {
            return Err(check.invalid(
                "multicast.group",
                value,
                shown,
                "a group address with its port, e.g. \"239.1.2.3:7200\"",
            ));
        }
        Err(_) => {
            return Err(check.invalid(
                "multicast.group",
                value,
                shown,
                "a multicast address and port, e.g. \"239.1.2.3:7200\" or \"[ff15::1:2]:7200\"",
            ));
        }
    };
    if !group.ip().is_multicast() {
        return Err(check.invalid(
            "multicast.group",
            value,
            shown,
            "a multicast group (224.0.0.0/4 or ff00::/8), not a unicast address; \
             239.0.0.0/8 is for use inside an organisation",
        ));
    }
    if let IpAddr::V4(address) = group.ip()
        && address.octets()[..3] == [224, 0, 0]
    {
        return Err(check.invalid(
            "multicast.group",
            value,
            shown,
            "a group outside 224.0.0.0/24, which is reserved for local network control \
                 protocols; use one in 239.0.0.0/8",
        ));
    }
    if group.port() == 0 {
        return Err(check.invalid(
            "multicast.group",
            value,
            shown,
            "a non-zero port: every member binds it",
        ));
    }
    Ok(group)
}

fn check_interface(
    check: &Checker<'_>,
    value: &Spanned<String>,
    group: SocketAddr,
) -> Result<MulticastInterface, ConfigError> {
    let shown = format!("{:?}", value.get_ref());
    let text = value.get_ref().trim();
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(address)) if group.is_ipv4() && !address.is_multicast() => {
            Ok(MulticastInterface::Address(address))
        }
        Ok(IpAddr::V4(_)) if group.is_ipv4() => Err(check.invalid(
            "multicast.interface",
            value,
            shown,
            "a unicast address of a local interface, e.g. \"127.0.0.1\"",
        )),
        Ok(_) if group.is_ipv4() => Err(check.invalid(
            "multicast.interface",
            value,
            shown,
            "an interface name or an IPv4 address: the group is IPv4",
        )),
        Ok(_) => Err(check.invalid(
            "multicast.interface",
            value,
            shown,
            "an interface name such as \"lo\" or \"eth0\": an IPv6 group is joined by interface",
        )),
        Err(_) => {
            // Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no '/', no whitespace.
            let valid = (1..=15).contains(&text.len())
                && text
                    .bytes()
                    .all(|byte| byte.is_ascii_graphic() && byte != b'/' && byte != b':');
            if valid {
                Ok(MulticastInterface::Name(text.to_owned()))
            } else {
                Err(check.invalid(
                    "multicast.interface",
                    value,
                    shown,
                    "an interface name (1 to 15 characters, no '/', ':' or spaces) such as \
                     \"lo\", or an IPv4 address of the interface",
                ))
            }
        }
    }
}
