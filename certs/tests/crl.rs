//! The cluster's revocation list in files: written, read back and checked against the CA;
//! every bad file is an error naming it.

use std::fs;

use replicast_certs::{CRL_FILE, CertError, ClusterCa, RevocationList, Role};

#[test]
fn a_list_is_saved_loaded_and_extended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(CRL_FILE);
    let ca = ClusterCa::generate("crl").expect("CA");
    let first = ca
        .issue_with_roles("client-1", Role::Client.into(), &[])
        .expect("issue");
    let second = ca
        .issue_with_roles("storage-1", Role::Storage.into(), &[])
        .expect("issue");

    let empty = ca.revocation_list(None, &[]).expect("an empty list");
    empty.save(&path).expect("save");
    let loaded = RevocationList::load(&path, &[ca.certificate_der()]).expect("load");
    assert_eq!(loaded, empty);
    assert_eq!((loaded.number(), loaded.revoked().len()), (1, 0));

    let one = ca
        .revocation_list(Some(&loaded), &[first.certificate_der()])
        .expect("revoke one");
    one.save(&path).expect("save over the old list");
    let two = ca
        .revocation_list(
            Some(&RevocationList::load(&path, &[ca.certificate_der()]).expect("load")),
            &[second.certificate_der(), first.certificate_der()],
        )
        .expect("revoke another");
    assert_eq!(two.number(), 3);
    assert_eq!(two.revoked().len(), 2, "a certificate is listed once");
    let kept = two
        .revoked()
        .into_iter()
        .find(|entry| one.revoked()[0].serial == entry.serial)
        .expect("the first revocation is kept");
    assert_eq!(kept.revoked_at, one.revoked()[0].revoked_at);
    assert!(two.is_revoked(&first.certificate_der()));
    assert!(two.is_revoked(&second.certificate_der()));
    let shown = two.to_string();
    assert!(
        shown.contains("CRL number: 3") && shown.contains("revoked:    2"),
        "{shown}"
    );
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(CRL_FILE);
    let ca = ClusterCa::generate("crl").expect("CA");
    let ca_der = ca.certificate_der();

    let missing = RevocationList::load(&path, std::slice::from_ref(&ca_der)).expect_err("missing");
    assert!(matches!(missing, CertError::Missing { .. }), "{missing}");
    assert!(missing.to_string().contains(CRL_FILE), "{missing}");

    fs::write(&path, "not a list").expect("write");
    let not_pem = RevocationList::load(&path, std::slice::from_ref(&ca_der)).expect_err("not PEM");
    assert!(matches!(not_pem, CertError::NotPem { .. }), "{not_pem}");
    assert!(not_pem.to_string().contains(CRL_FILE), "{not_pem}");

    fs::write(
        &path,
        "-----BEGIN X509 CRL-----\nMAMCAQA=\n-----END X509 CRL-----\n",
    )
    .expect("write");
    let corrupt = RevocationList::load(&path, std::slice::from_ref(&ca_der)).expect_err("corrupt");
    assert!(matches!(corrupt, CertError::InvalidCrl { .. }), "{corrupt}");
    assert!(corrupt.to_string().contains(CRL_FILE), "{corrupt}");

    // A list of another CA (with the same cluster name, so the same issuer name).
    let other = ClusterCa::generate("crl").expect("another CA");
    other
        .revocation_list(None, &[])
        .expect("its list")
        .save(&path)
        .expect("save");
    let foreign = RevocationList::load(&path, std::slice::from_ref(&ca_der)).expect_err("foreign");
    assert!(
        matches!(foreign, CertError::CrlNotFromCa { .. }),
        "{foreign}"
    );
    assert!(foreign.to_string().contains(CRL_FILE), "{foreign}");

    // A good list with a byte flipped in its signature.
    let good = ca.revocation_list(None, &[]).expect("a list");
    let mut der = good.ders()[0].to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered = RevocationList::from_der(&path, der.into(), &ca_der).expect_err("tampered");
    assert!(
        matches!(
            tampered,
            CertError::CrlNotFromCa { .. } | CertError::InvalidCrl { .. }
        ),
        "{tampered}"
    );
}
