//! Which network interface a multicast socket joins on and sends from.

use std::ffi::CString;
use std::net::Ipv4Addr;

use super::SocketError;

/// The interface a group is joined on and multicast is sent from (`IP_MULTICAST_IF`).
///
/// Naming the interface matters: a host with several interfaces would otherwise pick one by
/// its routing table, which is rarely the one the cluster's segment is on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MulticastInterface {
    /// The loopback interface: `127.0.0.1` for IPv4 groups, `lo` for IPv6 groups.
    #[default]
    Loopback,
    /// An interface by name, such as `eth0`.
    Name(String),
    /// An interface by index, as `if_nametoindex` gives it.
    Index(u32),
    /// An IPv4 interface by one of its addresses (IPv4 groups only).
    Address(Ipv4Addr),
}

/// An interface resolved to what the socket options need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResolvedInterface {
    /// The interface index (IPv6 options, `ip_mreqn`); 0 when only an address is known.
    pub(crate) index: u32,
    /// An IPv4 address of the interface, when known.
    pub(crate) ipv4: Option<Ipv4Addr>,
}

impl MulticastInterface {
    pub(crate) fn resolve(&self) -> Result<ResolvedInterface, SocketError> {
        match self {
            Self::Loopback => Ok(ResolvedInterface {
                // `lo` is interface 1 on Linux; resolving keeps other systems right too.
                index: index_of("lo").or_else(|_| index_of("lo0")).unwrap_or(1),
                ipv4: Some(Ipv4Addr::LOCALHOST),
            }),
            Self::Name(name) => Ok(ResolvedInterface {
                index: index_of(name)?,
                ipv4: None,
            }),
            Self::Index(index) => Ok(ResolvedInterface {
                index: *index,
                ipv4: None,
            }),
            Self::Address(address) => Ok(ResolvedInterface {
                index: 0,
                ipv4: Some(*address),
            }),
        }
    }
}

impl MulticastInterface {
    /// The interface's MTU, where the system tells it (Linux: `/sys/class/net/<name>/mtu`).
    pub fn mtu(&self) -> Option<usize> {
        let name = match self {
            Self::Loopback => "lo".to_owned(),
            Self::Name(name) => name.clone(),
            Self::Index(index) => name_of(*index)?,
            Self::Address(_) => return None,
        };
        std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// The name of the interface with index `index`.
fn name_of(index: u32) -> Option<String> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` has the IF_NAMESIZE bytes the call may write, and outlives it.
    let found = unsafe { libc::if_indextoname(index, name.as_mut_ptr()) };
    if found.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    name.to_str().ok().map(str::to_owned)
}

/// The index of the interface called `name`.
pub(crate) fn index_of(name: &str) -> Result<u32, SocketError> {
    let unknown = || SocketError::UnknownInterface {
        name: name.to_owned(),
    };
    let c_name = CString::new(name).map_err(|_| unknown())?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call, which only
    // reads it.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        Err(unknown())
    } else {
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolves_to_localhost_and_an_index() {
        let resolved = MulticastInterface::Loopback.resolve().unwrap();
        assert_eq!(resolved.ipv4, Some(Ipv4Addr::LOCALHOST));
        assert_ne!(resolved.index, 0);
    }

    #[test]
    fn loopback_mtu_is_known_and_index_names_round_trip() {
        let mtu = MulticastInterface::Loopback.mtu().unwrap();
        assert!(mtu >= 1280, "{mtu}");
        let index = index_of("lo").unwrap();
        assert_eq!(MulticastInterface::Index(index).mtu(), Some(mtu));
    }

    #[test]
    fn unknown_interface_name_is_a_typed_error() {
        let error = MulticastInterface::Name("no-such-if0".into())
            .resolve()
            .unwrap_err();
        assert!(matches!(error, SocketError::UnknownInterface { name } if name == "no-such-if0"));
    }
}
