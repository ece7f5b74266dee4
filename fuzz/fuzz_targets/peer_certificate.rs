//! Feeds arbitrary bytes, as a peer's leaf certificate, to the function every endpoint applies
//! to name the peer of a connection (`replicast_certs::node_name_of`), and to the certificate
//! reader of `replicast certs show`.
//!
//! rustls verifies a peer's chain before the name is read, so only a certificate signed by the
//! cluster CA reaches it in practice; it must still refuse anything else without panicking,
//! and a name it returns must be a valid node name.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use replicast_certs::{CertificateInfo, NodeName, node_name_of};
use rustls_pki_types::CertificateDer;

fuzz_target!(|data: &[u8]| {
    if let Ok(name) = node_name_of(&CertificateDer::from(data)) {
        assert!(NodeName::new(name.as_str()).is_ok(), "{name:?} is no node name");
    }
    let _ = CertificateInfo::from_der(Path::new("fuzz.pem"), data);
});
