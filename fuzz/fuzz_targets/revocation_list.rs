//! Feeds arbitrary bytes to the loader of the cluster's certificate revocation list
//! (`replicast_certs::RevocationList`), which every node reads at start and on SIGHUP, as DER
//! and inside a PEM `X509 CRL` block, against a fixed CA.
//!
//! The file comes from the operator, not the network, but a node must refuse a corrupt one
//! with an error naming it, never panic. No input can be a list of that CA without its key,
//! so anything accepted would be a forgery: the target fails on it.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use replicast_certs::{ClusterCa, RevocationList};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

fn ca() -> &'static CertificateDer<'static> {
    static CA: OnceLock<CertificateDer<'static>> = OnceLock::new();
    CA.get_or_init(|| {
        ClusterCa::generate("fuzz")
            .expect("a CA")
            .certificate_der()
    })
}

fuzz_target!(|data: &[u8]| {
    let der = CertificateRevocationListDer::from(data.to_vec());
    assert!(
        RevocationList::from_der(Path::new("fuzz.der"), der, ca()).is_err(),
        "a list not signed by the CA was accepted"
    );
    let dir = std::env::temp_dir().join(format!("replicast-fuzz-crl-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("crl.pem");
    let mut pem = b"-----BEGIN X509 CRL-----\n".to_vec();
    pem.extend_from_slice(data);
    pem.extend_from_slice(b"\n-----END X509 CRL-----\n");
    if std::fs::write(&path, &pem).is_ok() {
        assert!(RevocationList::load(&path, std::slice::from_ref(ca())).is_err(), "a forged list was accepted");
    }
});
