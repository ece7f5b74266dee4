//! Feeds arbitrary bytes, as a peer's leaf certificate, to the reader of the roles it grants
//! (`replicast_certs::roles_of`), which every node's gate applies to each new peer
//! certificate, and to the role names the command line and configuration parse.
//!
//! rustls verifies a peer's chain before its roles are read, so only a certificate signed by
//! the cluster CA reaches it in practice; it must still refuse anything else without
//! panicking, and roles it returns must print and parse back to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replicast_certs::{Roles, roles_of};
use rustls_pki_types::CertificateDer;

fuzz_target!(|data: &[u8]| {
    if let Ok(roles) = roles_of(&CertificateDer::from(data)) {
        let text = roles.to_string();
        assert_eq!(text.parse::<Roles>().ok(), Some(roles), "{text:?}");
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(roles) = text.parse::<Roles>()
    {
        assert_eq!(roles.to_string().parse::<Roles>().ok(), Some(roles), "{text:?}");
    }
});
