//! What each peer's certificate grants, read once per certificate.

use std::collections::HashMap;
use std::sync::Arc;

use replicast_certs::{Revocation, Roles, roles_of};
use replicast_transport::quic::PeerCertificate;

use crate::protocol::RefusalReason;

/// The most peers remembered; beyond it the table starts afresh (each entry is re-read from
/// the next certificate its peer presents), so that it stays bounded whatever connects.
const MAX_PEERS: usize = 4096;

/// What a peer may do, as its certificate says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grant {
    /// The roles its certificate grants.
    Roles(Roles),
    /// Its certificate names roles that cannot be read: it grants nothing.
    Unreadable,
    /// Its certificate is on the revocation list in force: it grants nothing.
    Revoked,
}

impl Grant {
    /// The roles, or the refusal reason that stands for all of them.
    pub(crate) fn roles(self) -> Result<Roles, RefusalReason> {
        match self {
            Self::Roles(roles) => Ok(roles),
            Self::Unreadable => Err(RefusalReason::UnreadableRoles),
            Self::Revoked => Err(RefusalReason::Revoked),
        }
    }
}

struct Entry {
    certificate: PeerCertificate,
    grant: Grant,
    /// Whether the certificate was on the revocation list of the generation checked.
    revoked: Option<(u64, bool)>,
}

impl Entry {
    /// The grant, unless the list in force revokes the certificate (checked once per list).
    fn grant(&mut self, revocation: Option<&Revocation>) -> Grant {
        let Some(revocation) = revocation else {
            return self.grant;
        };
        let generation = revocation.generation();
        let revoked = match self.revoked {
            Some((checked, revoked)) if checked == generation => revoked,
            _ => {
                let revoked = revocation.is_revoked(&self.certificate);
                self.revoked = Some((generation, revoked));
                revoked
            }
        };
        if revoked { Grant::Revoked } else { self.grant }
    }
}

/// The grant of each peer's latest certificate, by peer name.
///
/// Parsing a certificate costs microseconds; a message costs a pointer comparison (every
/// message of one connection shares its certificate) or, for a new connection, a comparison of
/// the certificate's bytes.
#[derive(Default)]
pub(crate) struct PeerGrants {
    peers: HashMap<String, Entry>,
}

impl PeerGrants {
    /// What `certificate`, presented by `peer`, grants, unless `revocation` revokes it; with
    /// no certificate (a store delivered by the fan-out, whose session was admitted with one),
    /// what `peer`'s last one granted, or nothing.
    pub(crate) fn grant(
        &mut self,
        peer: &str,
        certificate: Option<&PeerCertificate>,
        revocation: Option<&Revocation>,
    ) -> Grant {
        let Some(certificate) = certificate else {
            return self
                .peers
                .get_mut(peer)
                .map_or(Grant::Roles(Roles::NONE), |entry| entry.grant(revocation));
        };
        if let Some(entry) = self.peers.get_mut(peer)
            && (Arc::ptr_eq(&entry.certificate, certificate)
                || entry.certificate.as_ref() == certificate.as_ref())
        {
            entry.certificate = certificate.clone();
            return entry.grant(revocation);
        }
        let grant = match roles_of(certificate) {
            Ok(roles) => Grant::Roles(roles),
            Err(error) => {
                tracing::warn!(%peer, %error, "cannot read the roles of a peer's certificate");
                Grant::Unreadable
            }
        };
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(peer) {
            self.peers.clear();
        }
        let mut entry = Entry {
            certificate: certificate.clone(),
            grant,
            revoked: None,
        };
        let grant = entry.grant(revocation);
        self.peers.insert(peer.to_owned(), entry);
        grant
    }
}
