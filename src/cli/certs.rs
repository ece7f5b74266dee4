//! `replicast certs`: create the cluster CA and node certificates, and inspect certificates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use replicast_certs::{
    CA_CERT_FILE, CA_KEY_FILE, CRL_FILE, CertError, CertificateInfo, ClusterCa, NodeIdentity,
    NodeName, RevocationList, Roles, load_ca_certificate, load_ca_certificates, node_name_of,
};

use super::Error;

/// Arguments of `replicast certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Create a cluster CA, its (empty) revocation list and one key and certificate per node.
    ///
    /// Writes DIR/ca.pem, DIR/ca.key, DIR/crl.pem and DIR/NODE.pem, DIR/NODE.key for each
    /// node. Private keys are readable by their owner only. Nothing is written if any file
    /// already exists, unless --force.
    Init {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Nodes, comma-separated or repeated, each a name with its roles: NAME=ROLE, or
        /// NAME=ROLE+ROLE for several. Without =ROLE, the node gets --role, or else the role
        /// its name starts with (master, storage-1, client-a, admin-alice).
        #[arg(
            long = "node",
            value_name = "NAME[=ROLE][,...]",
            value_delimiter = ',',
            required = true
        )]
        nodes: Vec<String>,
        /// The roles of the nodes given without =ROLE: master, storage, client or admin
        /// (several joined by '+', e.g. client+admin).
        #[arg(long, value_name = "ROLE[+ROLE...]")]
        role: Option<String>,
        /// Extra subject alternative name for a node, as NODE=IP_OR_DNS (repeatable).
        /// With a single node, NODE= may be left out.
        #[arg(long = "san", value_name = "NODE=IP_OR_DNS")]
        sans: Vec<String>,
        /// Cluster name, written into every certificate.
        #[arg(long, value_name = "NAME", default_value = "replicast")]
        cluster: String,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue one more node certificate from an existing cluster CA.
    ///
    /// Writes OUT/NODE.pem and OUT/NODE.key, and OUT/ca.pem when OUT is not the CA directory
    /// and has no copy of the CA certificate yet.
    Add {
        /// Directory holding ca.pem and ca.key.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Node name, optionally with its roles as NAME=ROLE[+ROLE...].
        #[arg(long, value_name = "NAME[=ROLE]")]
        node: String,
        /// The node's roles: master, storage, client or admin (several joined by '+'). Without
        /// it (and without NAME=ROLE), the role the node's name starts with.
        #[arg(long, value_name = "ROLE[+ROLE...]")]
        role: Option<String>,
        /// Extra subject alternative name, as IP_OR_DNS or NODE=IP_OR_DNS (repeatable).
        #[arg(long = "san", value_name = "IP_OR_DNS")]
        sans: Vec<String>,
        /// Directory to write into [default: the CA directory].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Revoke node NAME's certificate: add it to the cluster's revocation list DIR/crl.pem,
    /// signed by the CA, numbered one higher.
    ///
    /// Copy the new crl.pem to every node (the file `tls.crl` names) and send them SIGHUP:
    /// they refuse the node at the handshake and close its connections.
    Revoke {
        /// Directory holding ca.pem, ca.key and crl.pem (created if missing).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The node whose certificate to revoke.
        #[arg(value_name = "NAME")]
        node: String,
        /// The certificate to revoke [default: DIR/NAME.pem]; for one that was since replaced
        /// there by `certs add --force`.
        #[arg(long, value_name = "FILE")]
        cert: Option<PathBuf>,
    },
    /// Print subject, subject alternative names, roles, validity and issuer of each
    /// certificate in a PEM file, or the number, date and entries of a revocation list (checked
    /// against ca.pem beside it).
    Show {
        /// PEM file holding one or more certificates, or a revocation list.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Failures of `replicast certs`, each with the step that failed; the cause names the file.
/// (Causes are boxed: a `CertError` with a path and dates is large.)
#[derive(Debug, thiserror::Error)]
enum CertsError {
    #[error("--san {0:?}: expected NODE=IP_OR_DNS")]
    SanWithoutNode(String),
    #[error("--san {san:?}: node {node:?} is not one of the nodes being issued")]
    SanForOtherNode { san: String, node: String },
    #[error("invalid --node")]
    NodeName(#[source] Box<CertError>),
    #[error("invalid role of node {node}")]
    Role {
        node: String,
        source: Box<CertError>,
    },
    #[error("invalid --role")]
    DefaultRole(#[source] Box<CertError>),
    #[error(
        "node {node}: no role given, and its name does not start with one; \
         write --node {node}=ROLE or give --role ROLE (master, storage, client, admin)"
    )]
    NoRole { node: String },
    #[error("cannot create the cluster CA")]
    CreateCa(#[source] Box<CertError>),
    #[error("cannot load the cluster CA from {}", .dir.display())]
    LoadCa {
        dir: PathBuf,
        source: Box<CertError>,
    },
    #[error("cannot issue the certificate of node {node}")]
    Issue {
        node: String,
        source: Box<CertError>,
    },
    #[error("refusing to write into {}", .dir.display())]
    Refused {
        dir: PathBuf,
        source: Box<CertError>,
    },
    #[error("cannot write the cluster CA")]
    SaveCa(#[source] Box<CertError>),
    #[error("cannot write the files of node {node}")]
    SaveNode {
        node: String,
        source: Box<CertError>,
    },
    #[error(
        "{} is not the certificate of this CA (use --force to replace it)",
        .path.display()
    )]
    ForeignCa { path: PathBuf },
    #[error(transparent)]
    Show(Box<CertError>),
    #[error("{} is the certificate of node {found}, not of {node}", .path.display())]
    OtherNode {
        path: PathBuf,
        node: String,
        found: String,
    },
    #[error("cannot revoke the certificate of node {node}")]
    Revoke {
        node: String,
        source: Box<CertError>,
    },
    #[error("cannot read the revocation list {} (fix or remove it first)", .path.display())]
    LoadCrl {
        path: PathBuf,
        source: Box<CertError>,
    },
    #[error("cannot write the revocation list")]
    SaveCrl(#[source] Box<CertError>),
}

/// Runs `replicast certs`.
pub fn run(args: CertsArgs) -> Result<(), Error> {
    match args.command {
        CertsCommand::Init {
            out,
            nodes,
            role,
            sans,
            cluster,
            force,
        } => init(&out, &nodes, role.as_deref(), &sans, &cluster, force)?,
        CertsCommand::Add {
            ca,
            node,
            role,
            sans,
            out,
            force,
        } => add(&ca, &node, role.as_deref(), &sans, out.as_deref(), force)?,
        CertsCommand::Revoke { ca, node, cert } => revoke(&ca, &node, cert.as_deref())?,
        CertsCommand::Show { file } => show(&file)?,
    }
    Ok(())
}

fn init(
    out: &Path,
    nodes: &[String],
    role: Option<&str>,
    sans: &[String],
    cluster: &str,
    force: bool,
) -> Result<(), CertsError> {
    let default_roles = default_roles(role)?;
    let specs = nodes
        .iter()
        .map(|node| node_spec(node, default_roles))
        .collect::<Result<Vec<_>, _>>()?;
    let mut nodes: Vec<NodeName> = Vec::with_capacity(specs.len());
    let mut roles = BTreeMap::new();
    for (name, node_roles) in specs {
        if !nodes.contains(&name) {
            nodes.push(name.clone());
        }
        roles.insert(name, node_roles);
    }
    let sans = sans_by_node(&nodes, sans)?;
    // Everything is generated in memory and every target checked before the first write, so
    // a refusal or a bad argument leaves the directory as it was.
    let ca = ClusterCa::generate(cluster).map_err(|e| CertsError::CreateCa(e.into()))?;
    let identities = nodes
        .iter()
        .map(|node| issue(&ca, node, roles[node], sans_of(&sans, node)))
        .collect::<Result<Vec<_>, _>>()?;
    let crl = ca
        .revocation_list(None, &[])
        .map_err(|e| CertsError::CreateCa(e.into()))?;
    if !force {
        let mut targets = vec![
            out.join(CA_CERT_FILE),
            out.join(CA_KEY_FILE),
            out.join(CRL_FILE),
        ];
        for node in &nodes {
            let (cert, key) = NodeIdentity::file_paths(out, node);
            targets.extend([cert, key]);
        }
        refuse_existing(out, &targets)?;
    }
    ca.save(out, force)
        .map_err(|e| CertsError::SaveCa(e.into()))?;
    println!(
        "cluster CA {:?}: {}, {}",
        ca.cluster_name(),
        out.join(CA_CERT_FILE).display(),
        out.join(CA_KEY_FILE).display()
    );
    crl.save(&out.join(CRL_FILE))
        .map_err(|e| CertsError::SaveCrl(e.into()))?;
    println!(
        "revocation list number {}, empty: {}",
        crl.number(),
        out.join(CRL_FILE).display()
    );
    for identity in &identities {
        save_node(identity, out, force)?;
    }
    Ok(())
}

fn add(
    ca_dir: &Path,
    node: &str,
    role: Option<&str>,
    sans: &[String],
    out: Option<&Path>,
    force: bool,
) -> Result<(), CertsError> {
    let (name, roles) = node_spec(node, default_roles(role)?)?;
    let sans = sans_by_node(std::slice::from_ref(&name), sans)?;
    let ca = ClusterCa::load(ca_dir).map_err(|source| CertsError::LoadCa {
        dir: ca_dir.to_owned(),
        source: source.into(),
    })?;
    let identity = issue(&ca, &name, roles, sans_of(&sans, &name))?;
    let out = out.unwrap_or(ca_dir);
    let (cert, key) = NodeIdentity::file_paths(out, &name);
    if !force {
        refuse_existing(out, &[cert, key])?;
    }
    // A node directory needs the CA certificate too; one of another CA there would make
    // the new identity fail to load, so it is replaced only with --force.
    let ca_copy = out.join(CA_CERT_FILE);
    let write_ca_copy = match load_ca_certificate(&ca_copy) {
        Ok(existing) if existing == ca.certificate_der() => false,
        Err(CertError::Missing { .. }) => true,
        _ if force => true,
        _ => return Err(CertsError::ForeignCa { path: ca_copy }),
    };
    save_node(&identity, out, force)?;
    if write_ca_copy {
        ca.save_certificate(out, true)
            .map_err(|e| CertsError::SaveCa(e.into()))?;
        println!("cluster CA certificate: {}", ca_copy.display());
    }
    Ok(())
}

fn revoke(ca_dir: &Path, node: &str, cert: Option<&Path>) -> Result<(), CertsError> {
    let name = NodeName::new(node.trim()).map_err(|e| CertsError::NodeName(e.into()))?;
    let ca = ClusterCa::load(ca_dir).map_err(|source| CertsError::LoadCa {
        dir: ca_dir.to_owned(),
        source: source.into(),
    })?;
    let revoke_error = |source: CertError| CertsError::Revoke {
        node: name.to_string(),
        source: source.into(),
    };
    let cert_path = cert.map_or_else(|| NodeIdentity::file_paths(ca_dir, &name).0, Path::to_owned);
    let der = ca.read_issued(&cert_path).map_err(revoke_error)?;
    let found = node_name_of(&der).map_err(revoke_error)?;
    if found != name {
        return Err(CertsError::OtherNode {
            path: cert_path,
            node: name.to_string(),
            found: found.to_string(),
        });
    }
    // The list in force is extended, never replaced by a shorter one: a list that cannot be
    // read is an error, not a fresh start.
    let crl_path = ca_dir.join(CRL_FILE);
    let previous = match RevocationList::load(&crl_path, &[ca.certificate_der()]) {
        Ok(list) => Some(list),
        Err(CertError::Missing { .. }) => None,
        Err(source) => {
            return Err(CertsError::LoadCrl {
                path: crl_path,
                source: source.into(),
            });
        }
    };
    let list = ca
        .revocation_list(previous.as_ref(), &[der])
        .map_err(revoke_error)?;
    list.save(&crl_path)
        .map_err(|e| CertsError::SaveCrl(e.into()))?;
    println!(
        "revoked {name} ({}): {}, CRL number {}, {} revoked in all; copy it to every node and \
         send them SIGHUP",
        cert_path.display(),
        crl_path.display(),
        list.number(),
        list.revoked().len()
    );
    Ok(())
}

fn show(file: &Path) -> Result<(), CertsError> {
    if is_revocation_list(file) {
        let ca_path = file
            .parent()
            .unwrap_or_else(|| Path::new(""))
            .join(CA_CERT_FILE);
        let cas = load_ca_certificates(&ca_path).map_err(|e| CertsError::Show(e.into()))?;
        let list = RevocationList::load(file, &cas).map_err(|e| CertsError::Show(e.into()))?;
        println!("{list}");
        return Ok(());
    }
    let infos = CertificateInfo::read_file(file).map_err(|e| CertsError::Show(e.into()))?;
    for (i, info) in infos.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{info}");
    }
    Ok(())
}

/// Whether `file` holds a PEM revocation list (anything else is shown as certificates).
fn is_revocation_list(file: &Path) -> bool {
    std::fs::read(file).is_ok_and(|bytes| {
        bytes
            .windows(b"-----BEGIN X509 CRL-----".len())
            .any(|window| window == b"-----BEGIN X509 CRL-----")
    })
}

/// `--role`, the roles of nodes given without `=ROLE`.
fn default_roles(role: Option<&str>) -> Result<Option<Roles>, CertsError> {
    role.map(|role| role.trim().parse::<Roles>())
        .transpose()
        .map_err(|e| CertsError::DefaultRole(e.into()))
}

/// A `--node` value, `NAME` or `NAME=ROLE[+ROLE...]`, with its roles: those written, else
/// `default_roles`, else the role the name starts with.
fn node_spec(node: &str, default_roles: Option<Roles>) -> Result<(NodeName, Roles), CertsError> {
    let (name, written) = match node.split_once('=') {
        Some((name, roles)) => (name, Some(roles)),
        None => (node, None),
    };
    let name = NodeName::new(name.trim()).map_err(|e| CertsError::NodeName(e.into()))?;
    let roles = match written {
        Some(roles) => roles
            .trim()
            .parse::<Roles>()
            .map_err(|e| CertsError::Role {
                node: name.to_string(),
                source: e.into(),
            })?,
        None => default_roles
            .or_else(|| Roles::infer_from_name(name.as_str()))
            .ok_or_else(|| CertsError::NoRole {
                node: name.to_string(),
            })?,
    };
    Ok((name, roles))
}

/// Groups `--san` values by node; a value without `NODE=` belongs to the only node.
fn sans_by_node(
    nodes: &[NodeName],
    sans: &[String],
) -> Result<BTreeMap<NodeName, Vec<String>>, CertsError> {
    let mut by_node: BTreeMap<NodeName, Vec<String>> = nodes
        .iter()
        .map(|node| (node.clone(), Vec::new()))
        .collect();
    for san in sans {
        let (node, value) = match san.split_once('=') {
            Some((node, value)) => match nodes.iter().find(|n| n.as_str() == node) {
                Some(node) => (node, value),
                None => {
                    return Err(CertsError::SanForOtherNode {
                        san: san.clone(),
                        node: node.to_owned(),
                    });
                }
            },
            None if nodes.len() == 1 => (&nodes[0], san.as_str()),
            None => return Err(CertsError::SanWithoutNode(san.clone())),
        };
        if let Some(list) = by_node.get_mut(node) {
            list.push(value.to_owned());
        }
    }
    Ok(by_node)
}

fn sans_of<'a>(sans: &'a BTreeMap<NodeName, Vec<String>>, node: &NodeName) -> &'a [String] {
    sans.get(node).map_or(&[], Vec::as_slice)
}

fn issue(
    ca: &ClusterCa,
    node: &NodeName,
    roles: Roles,
    sans: &[String],
) -> Result<NodeIdentity, CertsError> {
    ca.issue_with_roles(node.as_str(), roles, sans)
        .map_err(|source| CertsError::Issue {
            node: node.to_string(),
            source: source.into(),
        })
}

fn refuse_existing(dir: &Path, targets: &[PathBuf]) -> Result<(), CertsError> {
    match targets.iter().find(|path| path.exists()) {
        Some(path) => Err(CertsError::Refused {
            dir: dir.to_owned(),
            source: CertError::AlreadyExists { path: path.clone() }.into(),
        }),
        None => Ok(()),
    }
}

fn save_node(identity: &NodeIdentity, out: &Path, force: bool) -> Result<(), CertsError> {
    identity
        .save(out, force)
        .map_err(|source| CertsError::SaveNode {
            node: identity.name().to_owned(),
            source: source.into(),
        })?;
    let name = identity.node_name();
    let (cert, key) = NodeIdentity::file_paths(out, name);
    println!(
        "node {name} ({}): {}, {}",
        identity.roles(),
        cert.display(),
        key.display()
    );
    Ok(())
}
