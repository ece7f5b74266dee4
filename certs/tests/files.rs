//! Saving and loading certificates: round trips, file modes, refusals and every load error.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use replicast_certs::{
    CA_VALIDITY, CertError, CertificateInfo, ClusterCa, NODE_VALIDITY, NodeIdentity,
    ValidityStatus, load_ca_certificate,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn saved_cluster(dir: &Path) -> ClusterCa {
    let ca = ClusterCa::generate("test").expect("generate CA");
    ca.save(dir, false).expect("save CA");
    for node in ["node-a", "node-b"] {
        ca.issue(node, &["127.0.0.1".into()])
            .expect("issue")
            .save(dir, false)
            .expect("save node");
    }
    ca
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).expect("parse").1
}

fn validity_secs(cert: &X509Certificate<'_>) -> i64 {
    cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()
}

#[test]
fn saved_identities_load_back_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ClusterCa::generate("prod-eu").expect("generate CA");
    ca.save(dir.path(), false).expect("save CA");
    let issued = ca.issue("node-a", &[]).expect("issue");
    issued.save(dir.path(), false).expect("save node");

    let loaded = NodeIdentity::load_dir(dir.path(), "node-a").expect("load node");
    assert_eq!(loaded.name(), "node-a");
    assert_eq!(loaded.certificate_der(), issued.certificate_der());
    assert_eq!(loaded.ca_certificate_der(), ca.certificate_der());

    let loaded_ca = ClusterCa::load(dir.path()).expect("load CA");
    assert_eq!(loaded_ca.certificate_der(), ca.certificate_der());
    assert_eq!(loaded_ca.cluster_name(), "prod-eu");
    // A loaded CA still issues certificates that load against the saved ca.pem.
    loaded_ca
        .issue("node-b", &[])
        .expect("issue from loaded CA")
        .save(dir.path(), false)
        .expect("save node-b");
    NodeIdentity::load_dir(dir.path(), "node-b").expect("load node-b");
}

#[test]
fn certificates_carry_names_usages_and_validity() {
    let ca = ClusterCa::generate("test").expect("generate CA");
    let node = ca
        .issue(
            "node-a",
            &["10.0.0.7".into(), "a.example.org".into(), "node-a".into()],
        )
        .expect("issue");

    let ca_der = ca.certificate_der();
    let ca_cert = parse(&ca_der);
    assert!(ca_cert.is_ca());
    let usage = ca_cert
        .key_usage()
        .expect("key usage")
        .expect("present")
        .value;
    assert!(usage.key_cert_sign() && usage.crl_sign());
    assert!(validity_secs(&ca_cert) >= CA_VALIDITY.as_secs() as i64);

    let der = node.certificate_der();
    let cert = parse(&der);
    assert!(!cert.is_ca());
    let cn = cert.subject().iter_common_name().next().expect("CN");
    assert_eq!(cn.as_str().expect("CN string"), "node-a");
    let sans = &cert
        .subject_alternative_name()
        .expect("SAN")
        .expect("present")
        .value;
    assert_eq!(
        sans.general_names,
        [
            GeneralName::DNSName("node-a"),
            GeneralName::IPAddress(&[10, 0, 0, 7]),
            GeneralName::DNSName("a.example.org"),
        ]
    );
    let eku = cert
        .extended_key_usage()
        .expect("EKU")
        .expect("present")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    let one_year = validity_secs(&cert);
    assert!(one_year >= NODE_VALIDITY.as_secs() as i64 && one_year < 366 * 86400);
    assert_eq!(cert.issuer(), ca_cert.subject());
}

#[test]
fn invalid_names_are_refused() {
    let ca = ClusterCa::generate("test").expect("generate CA");
    for bad in ["", "Node", "node_a", "-a", "a-", &"a".repeat(64)] {
        assert!(
            matches!(ca.issue(bad, &[]), Err(CertError::InvalidNodeName { .. })),
            "{bad:?} accepted"
        );
    }
    assert!(matches!(
        ca.issue("node-a", &["not a name".into()]),
        Err(CertError::InvalidSan { .. })
    ));
    assert!(matches!(
        ClusterCa::generate(""),
        Err(CertError::InvalidClusterName { .. })
    ));
}

#[cfg(unix)]
#[test]
fn private_keys_are_owner_only_even_when_replaced() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let ca = saved_cluster(dir.path());
    let mode = |name: &str| {
        fs::metadata(dir.path().join(name))
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ca.key"), 0o600);
    assert_eq!(mode("node-a.key"), 0o600);
    assert_eq!(mode("node-a.pem") & 0o077, 0o044);

    // A world-readable file in the way is replaced, not rewritten in place.
    fs::set_permissions(
        dir.path().join("node-a.key"),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    ca.issue("node-a", &[])
        .expect("issue")
        .save(dir.path(), true)
        .expect("save --force");
    assert_eq!(mode("node-a.key"), 0o600);
}

#[test]
fn existing_files_are_kept_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = saved_cluster(dir.path());
    let before = fs::read(dir.path().join("node-a.pem")).expect("read");

    // Only the key exists: the refusal names it and the certificate is not written either.
    fs::remove_file(dir.path().join("node-a.pem")).expect("remove");
    let err = ca
        .issue("node-a", &[])
        .expect("issue")
        .save(dir.path(), false)
        .unwrap_err();
    match err {
        CertError::AlreadyExists { path } => assert_eq!(path, dir.path().join("node-a.key")),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert!(!dir.path().join("node-a.pem").exists());
    fs::write(dir.path().join("node-a.pem"), &before).expect("restore");

    let other = ClusterCa::generate("test").expect("generate CA");
    assert!(matches!(
        other.save(dir.path(), false),
        Err(CertError::AlreadyExists { .. })
    ));
    assert_eq!(
        ClusterCa::load(dir.path()).expect("load").certificate_der(),
        ca.certificate_der()
    );

    other.save(dir.path(), true).expect("save --force");
    assert_eq!(
        ClusterCa::load(dir.path()).expect("load").certificate_der(),
        other.certificate_der()
    );
}

fn load_a(dir: &Path) -> Result<NodeIdentity, CertError> {
    NodeIdentity::load(
        &dir.join("node-a.pem"),
        &dir.join("node-a.key"),
        &dir.join("ca.pem"),
    )
}

#[test]
fn missing_files_are_named() {
    for file in ["node-a.pem", "node-a.key", "ca.pem"] {
        let dir = tempfile::tempdir().expect("tempdir");
        saved_cluster(dir.path());
        fs::remove_file(dir.path().join(file)).expect("remove");
        match load_a(dir.path()) {
            Err(CertError::Missing { path }) => assert_eq!(path, dir.path().join(file)),
            other => panic!("{file}: expected Missing, got {other:?}"),
        }
    }
}

#[test]
fn non_pem_files_are_named() {
    let garbage: [&[u8]; 3] = [b"", b"hello\n", &[0xff, 0x00, 0x30, 0x82]];
    for file in ["node-a.pem", "node-a.key", "ca.pem"] {
        for contents in garbage {
            let dir = tempfile::tempdir().expect("tempdir");
            saved_cluster(dir.path());
            fs::write(dir.path().join(file), contents).expect("write");
            match load_a(dir.path()) {
                Err(CertError::NotPem { path, .. }) => assert_eq!(path, dir.path().join(file)),
                other => panic!("{file} {contents:?}: expected NotPem, got {other:?}"),
            }
        }
    }
    // A key where the certificate should be: PEM, but no certificate in it.
    let dir = tempfile::tempdir().expect("tempdir");
    saved_cluster(dir.path());
    fs::copy(dir.path().join("node-a.key"), dir.path().join("node-a.pem")).expect("copy");
    assert!(matches!(load_a(dir.path()), Err(CertError::NotPem { .. })));
}

#[test]
fn corrupt_certificate_is_reported_not_panicked() {
    let dir = tempfile::tempdir().expect("tempdir");
    saved_cluster(dir.path());
    let bogus = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
    fs::write(dir.path().join("node-a.pem"), bogus).expect("write");
    match load_a(dir.path()) {
        Err(CertError::InvalidCertificate { path, .. }) => {
            assert_eq!(path, dir.path().join("node-a.pem"))
        }
        other => panic!("expected InvalidCertificate, got {other:?}"),
    }
}

#[test]
fn key_of_another_node_is_a_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    saved_cluster(dir.path());
    fs::copy(dir.path().join("node-b.key"), dir.path().join("node-a.key")).expect("copy");
    match load_a(dir.path()) {
        Err(CertError::KeyMismatch { cert, key }) => {
            assert_eq!(cert, dir.path().join("node-a.pem"));
            assert_eq!(key, dir.path().join("node-a.key"));
        }
        other => panic!("expected KeyMismatch, got {other:?}"),
    }
}

#[test]
fn expired_and_not_yet_valid_certificates_say_their_dates() {
    let now = SystemTime::now();
    let cases = [
        (now - 10 * DAY, now - DAY, "expired"),
        (now + DAY, now + 10 * DAY, "not yet valid"),
    ];
    for (not_before, not_after, case) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = saved_cluster(dir.path());
        ca.issue_with_validity("node-a", &[], not_before, not_after)
            .expect("issue")
            .save(dir.path(), true)
            .expect("save");
        let err = load_a(dir.path()).expect_err(case);
        let message = err.to_string();
        match (&err, case) {
            (
                CertError::Expired {
                    path, not_after, ..
                },
                "expired",
            ) => {
                assert_eq!(*path, dir.path().join("node-a.pem"));
                assert!(message.contains(not_after.as_str()), "{message}");
            }
            (
                CertError::NotYetValid {
                    path, not_before, ..
                },
                "not yet valid",
            ) => {
                assert_eq!(*path, dir.path().join("node-a.pem"));
                assert!(message.contains(not_before.as_str()), "{message}");
            }
            _ => panic!("{case}: got {err:?}"),
        }
        assert!(message.contains("node-a.pem"), "{message}");
    }
}

#[test]
fn certificate_of_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    saved_cluster(dir.path());
    ClusterCa::generate("test")
        .expect("generate CA")
        .issue("node-a", &[])
        .expect("issue")
        .save(dir.path(), true)
        .expect("save");
    match load_a(dir.path()) {
        Err(CertError::NotSignedByCa { cert, ca }) => {
            assert_eq!(cert, dir.path().join("node-a.pem"));
            assert_eq!(ca, dir.path().join("ca.pem"));
        }
        other => panic!("expected NotSignedByCa, got {other:?}"),
    }
}

#[test]
fn a_node_certificate_is_not_a_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = saved_cluster(dir.path());
    assert_eq!(
        load_ca_certificate(&dir.path().join("ca.pem")).expect("CA certificate"),
        ca.certificate_der()
    );
    assert!(matches!(
        load_ca_certificate(&dir.path().join("node-a.pem")),
        Err(CertError::NotCa { .. })
    ));
    fs::copy(dir.path().join("node-b.pem"), dir.path().join("ca.pem")).expect("copy");
    assert!(matches!(load_a(dir.path()), Err(CertError::NotCa { .. })));
    fs::copy(dir.path().join("node-b.key"), dir.path().join("ca.key")).expect("copy");
    assert!(matches!(
        ClusterCa::load(dir.path()),
        Err(CertError::NotCa { .. })
    ));
}

#[test]
fn ca_key_must_match_ca_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    saved_cluster(dir.path());
    fs::copy(dir.path().join("node-a.key"), dir.path().join("ca.key")).expect("copy");
    assert!(matches!(
        ClusterCa::load(dir.path()),
        Err(CertError::KeyMismatch { .. })
    ));
}

#[test]
fn load_dir_checks_the_node_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    saved_cluster(dir.path());
    for ext in ["pem", "key"] {
        fs::copy(
            dir.path().join(format!("node-b.{ext}")),
            dir.path().join(format!("node-c.{ext}")),
        )
        .expect("copy");
    }
    match NodeIdentity::load_dir(dir.path(), "node-c") {
        Err(CertError::NameMismatch {
            expected, found, ..
        }) => {
            assert_eq!((expected.as_str(), found.as_str()), ("node-c", "node-b"));
        }
        other => panic!("expected NameMismatch, got {other:?}"),
    }
}

#[test]
fn info_summarizes_a_node_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    saved_cluster(dir.path());
    let infos = CertificateInfo::read_file(&dir.path().join("node-a.pem")).expect("info");
    assert_eq!(infos.len(), 1);
    let info = &infos[0];
    assert!(info.subject.contains("CN=node-a"), "{}", info.subject);
    assert!(info.issuer.contains("CN=test CA"), "{}", info.issuer);
    assert_eq!(info.subject_alt_names, ["DNS:node-a", "IP:127.0.0.1"]);
    assert_eq!(info.extended_key_usages, ["serverAuth", "clientAuth"]);
    assert_eq!(info.status, ValidityStatus::Valid);
    assert!(!info.is_ca);
    assert!(info.to_string().contains("not after:"));
}
