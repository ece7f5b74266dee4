//! `replicast certs`: create the cluster CA and node certificates, and inspect certificates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use replicast_certs::{
    CA_CERT_FILE, CA_KEY_FILE, CertError, CertificateInfo, ClusterCa, NodeIdentity, NodeName,
    load_ca_certificate,
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
    /// Create a cluster CA and one key and certificate per node.
    ///
    /// Writes DIR/ca.pem, DIR/ca.key and DIR/NODE.pem, DIR/NODE.key for each node. Private
    /// keys are readable by their owner only. Nothing is written if any file already exists,
    /// unless --force.
    Init {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Node names, comma-separated or repeated.
        #[arg(
            long = "node",
            value_name = "NAME[,NAME...]",
            value_delimiter = ',',
            required = true
        )]
        nodes: Vec<String>,
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
        /// Node name.
        #[arg(long, value_name = "NAME")]
        node: String,
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
    /// Print subject, subject alternative names, validity and issuer of each certificate in a
    /// PEM file.
    Show {
        /// PEM file holding one or more certificates.
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
}

/// Runs `replicast certs`.
pub fn run(args: CertsArgs) -> Result<(), Error> {
    match args.command {
        CertsCommand::Init {
            out,
            nodes,
            sans,
            cluster,
            force,
        } => init(&out, &nodes, &sans, &cluster, force)?,
        CertsCommand::Add {
            ca,
            node,
            sans,
            out,
            force,
        } => add(&ca, &node, &sans, out.as_deref(), force)?,
        CertsCommand::Show { file } => show(&file)?,
    }
    Ok(())
}

fn init(
    out: &Path,
    nodes: &[String],
    sans: &[String],
    cluster: &str,
    force: bool,
) -> Result<(), CertsError> {
    let nodes = node_names(nodes)?;
    let sans = sans_by_node(&nodes, sans)?;
    // Everything is generated in memory and every target checked before the first write, so
    // a refusal or a bad argument leaves the directory as it was.
    let ca = ClusterCa::generate(cluster).map_err(|e| CertsError::CreateCa(e.into()))?;
    let identities = nodes
        .iter()
        .map(|node| issue(&ca, node, sans_of(&sans, node)))
        .collect::<Result<Vec<_>, _>>()?;
    if !force {
        let mut targets = vec![out.join(CA_CERT_FILE), out.join(CA_KEY_FILE)];
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
    for identity in &identities {
        save_node(identity, out, force)?;
    }
    Ok(())
}

fn add(
    ca_dir: &Path,
    node: &str,
    sans: &[String],
    out: Option<&Path>,
    force: bool,
) -> Result<(), CertsError> {
    let name = NodeName::new(node.trim()).map_err(|e| CertsError::NodeName(e.into()))?;
    let sans = sans_by_node(std::slice::from_ref(&name), sans)?;
    let ca = ClusterCa::load(ca_dir).map_err(|source| CertsError::LoadCa {
        dir: ca_dir.to_owned(),
        source: source.into(),
    })?;
    let identity = issue(&ca, &name, sans_of(&sans, &name))?;
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

fn show(file: &Path) -> Result<(), CertsError> {
    let infos = CertificateInfo::read_file(file).map_err(|e| CertsError::Show(e.into()))?;
    for (i, info) in infos.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{info}");
    }
    Ok(())
}

fn node_names(nodes: &[String]) -> Result<Vec<NodeName>, CertsError> {
    let mut names = Vec::with_capacity(nodes.len());
    for node in nodes {
        let name = NodeName::new(node.trim()).map_err(|e| CertsError::NodeName(e.into()))?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
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

fn issue(ca: &ClusterCa, node: &NodeName, sans: &[String]) -> Result<NodeIdentity, CertsError> {
    ca.issue(node.as_str(), sans)
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
    println!("node {name}: {}, {}", cert.display(), key.display());
    Ok(())
}
