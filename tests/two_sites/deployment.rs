//! The deployment of docs/DEPLOY.md, done the way the guide says: certificates made once with
//! `replicast certs init` (and one more with `replicast certs add`), each host given the CA
//! certificate, the revocation list and its own key and certificate with `install`, and each
//! host's configuration taken from docs/examples/site-*.toml.
//!
//! Every host gets its own directory standing for its root file system: the examples'
//! `/etc/replicast/` and `/var/lib/replicast/` become `HOST/etc/replicast/` and
//! `HOST/var/lib/replicast/`, the only change made to them.

use std::path::{Path, PathBuf};
use std::process::Command;

use replicast_testkit::process;

/// Where the example configurations are, relative to the repository.
pub const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples");

/// Each node of the two-site example: its name, and the example file that configures it.
pub const NODES: [(&str, &str); 7] = [
    ("master", "site-a-master.toml"),
    ("storage-a1", "site-a-storage-a1.toml"),
    ("storage-a2", "site-a-storage-a2.toml"),
    ("storage-b1", "site-b-storage-b1.toml"),
    ("storage-b2", "site-b-storage-b2.toml"),
    ("client-a", "site-a-client.toml"),
    ("client-b", "site-b-client.toml"),
];

/// The nodes `replicast certs init` issues at first; `client-b` is added later with
/// `replicast certs add`, as a node that joins an existing cluster.
const FIRST_NODES: &str = "master,storage-a1,storage-a2,storage-b1,storage-b2,client-a";

/// The installed deployment: one directory per host under a temporary root.
pub struct Deployment {
    root: tempfile::TempDir,
}

impl Deployment {
    /// Makes the certificates and installs every node's files.
    pub fn install() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let ca = root.path().join("ca");
        let ca_dir = ca.to_str().expect("a UTF-8 temporary path");
        // On the administrator's machine: the CA and the first nodes' certificates ...
        replicast(&["certs", "init", "--out", ca_dir, "--node", FIRST_NODES]);
        // ... and one node added later, from the same CA.
        replicast(&["certs", "add", "--ca", ca_dir, "--node", "client-b"]);
        // A renewed certificate (same name, new key), which the cluster must take as well.
        replicast(&[
            "certs",
            "add",
            "--ca",
            ca_dir,
            "--node",
            "storage-b1",
            "--force",
        ]);
        let shown = replicast(&["certs", "show", &format!("{ca_dir}/storage-b1.pem")]);
        assert!(
            shown.contains("storage-b1"),
            "certs show names the node: {shown}"
        );

        let deployment = Self { root };
        for (node, example) in NODES {
            let etc = deployment.etc(node);
            // On each host: the CA certificate, its revocation list, the node's certificate
            // and its key (owner only). The CA's key stays on the administrator's machine.
            install("0644", &ca.join("ca.pem"), &etc.join("ca.pem"));
            install("0644", &ca.join("crl.pem"), &etc.join("crl.pem"));
            install(
                "0644",
                &ca.join(format!("{node}.pem")),
                &etc.join(format!("{node}.pem")),
            );
            install(
                "0600",
                &ca.join(format!("{node}.key")),
                &etc.join(format!("{node}.key")),
            );
            let text = std::fs::read_to_string(Path::new(EXAMPLES).join(example))
                .unwrap_or_else(|error| panic!("read docs/examples/{example}: {error}"));
            let staged = deployment.root.path().join(example);
            std::fs::write(&staged, deployment.relocate(node, &text)).expect("write a config");
            install("0644", &staged, &deployment.config(node));
        }
        deployment
    }

    /// Host `node`'s stand-in for its root directory.
    fn host_root(&self, node: &str) -> PathBuf {
        self.root.path().join("hosts").join(node)
    }

    fn etc(&self, node: &str) -> PathBuf {
        self.host_root(node).join("etc/replicast")
    }

    /// `/etc/replicast/NODE.toml` of host `node`.
    pub fn config(&self, node: &str) -> PathBuf {
        self.etc(node).join(format!("{node}.toml"))
    }

    /// `storage.path` of storage `node`.
    pub fn database(&self, node: &str) -> PathBuf {
        self.host_root(node)
            .join(format!("var/lib/replicast/{node}.redb"))
    }

    /// The example's text with its absolute paths moved under the host's directory; checks the
    /// example uses exactly the paths the guide and the systemd unit name.
    fn relocate(&self, node: &str, text: &str) -> String {
        let host = self.host_root(node);
        let host = host.to_str().expect("a UTF-8 temporary path");
        assert!(
            text.contains(&format!("/etc/replicast/{node}.key")),
            "the example of {node} takes its key from /etc/replicast/"
        );
        text.replace("\"/etc/replicast/", &format!("\"{host}/etc/replicast/"))
            .replace(
                "\"/var/lib/replicast/",
                &format!("\"{host}/var/lib/replicast/"),
            )
    }
}

/// Runs `replicast ARGS` in this namespace; panics with its standard error if it fails.
fn replicast(args: &[&str]) -> String {
    process::replicast(args).unwrap_or_else(|error| panic!("replicast {args:?}: {error}"))
}

/// `install -D -m MODE FROM TO`, as the guide distributes the files.
fn install(mode: &str, from: &Path, to: &Path) {
    let output = Command::new("install")
        .args(["-D", "-m", mode])
        .arg(from)
        .arg(to)
        .output()
        .expect("run install");
    assert!(
        output.status.success(),
        "install {} {}: {}",
        from.display(),
        to.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}
