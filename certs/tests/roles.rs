//! Roles in node certificates: issued as URI subject alternative names, read back from the
//! DER of a peer's certificate and from files, refused when unreadable.

use rcgen::string::Ia5String;
use rcgen::{CertificateParams, KeyPair, SanType};
use replicast_certs::{ClusterCa, NodeIdentity, Role, Roles, roles_of};

#[test]
fn issued_roles_are_read_back_from_der_and_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ClusterCa::generate("roles").expect("CA");
    ca.save(dir.path(), false).expect("save CA");
    for roles in [
        Roles::from(Role::Master),
        Roles::from(Role::Storage),
        Roles::from(Role::Client),
        Roles::from(Role::Admin),
        Roles::from(Role::Client).with(Role::Admin),
        Roles::NONE,
    ] {
        let name = format!("node-{}", roles.to_string().replace('+', "-"));
        let identity = ca
            .issue_with_roles(&name, roles, &["127.0.0.1".to_owned()])
            .expect("issue");
        assert_eq!(identity.roles(), roles);
        assert_eq!(roles_of(&identity.certificate_der()).expect("roles"), roles);
        identity.save(dir.path(), false).expect("save");
        let loaded = NodeIdentity::load_dir(dir.path(), &name).expect("load");
        assert_eq!(loaded.roles(), roles, "{name}");
    }
    // The plain `issue` grants nothing.
    let plain = ca.issue("plain", &[]).expect("issue");
    assert!(plain.roles().is_empty());
}

#[test]
fn unknown_roles_and_garbage_are_refused() {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["node-x".to_owned()]).expect("params");
    params.subject_alt_names.push(SanType::URI(
        Ia5String::try_from("urn:replicast:role:root").expect("ASCII"),
    ));
    let cert = params.self_signed(&key).expect("self-signed");
    let error = roles_of(cert.der()).expect_err("an unknown role is refused");
    assert!(error.to_string().contains("\"root\""), "{error}");

    // Other URIs are no roles.
    let mut params = CertificateParams::new(vec!["node-y".to_owned()]).expect("params");
    params.subject_alt_names.push(SanType::URI(
        Ia5String::try_from("https://example.org/storage").expect("ASCII"),
    ));
    let cert = params.self_signed(&key).expect("self-signed");
    assert_eq!(roles_of(cert.der()).expect("roles"), Roles::NONE);

    for garbage in [&[][..], &[0x30, 0x03, 0x02, 0x01], &[0xff; 64]] {
        let der = rustls_pki_types::CertificateDer::from(garbage.to_vec());
        assert!(roles_of(&der).is_err(), "{garbage:?}");
    }
}
