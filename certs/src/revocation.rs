//! rustls configurations that refuse revoked peers, with a revocation list that can be
//! replaced while they are in use (a node reloads it on SIGHUP without rebinding).
//!
//! The configurations hold verifiers that delegate to rustls' `WebPkiClientVerifier` and
//! `WebPkiServerVerifier` built with the current list ([`RevocationList`]); replacing the list
//! builds new ones and swaps them in, so every handshake after the swap checks the new list, in
//! both directions: a server refuses a revoked client's certificate, a client refuses a
//! revoked server's. Connections established before are not touched here: the application
//! closes those of peers [`Revocation::is_revoked`] names.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::tls::{cluster_roots, ring_provider};
use crate::{ALPN, CertError, NodeIdentity, RevocationList};

/// The verifiers in force and the list they check.
struct State {
    client: Arc<dyn ClientCertVerifier>,
    server: Arc<dyn ServerCertVerifier>,
    list: Option<RevocationList>,
}

struct Shared {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    cas: Vec<CertificateDer<'static>>,
    state: RwLock<State>,
    /// Bumped at each replacement, so that caches of "is this peer revoked" know when to ask
    /// again.
    generation: AtomicU64,
}

impl Shared {
    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // Every write replaces the state in one assignment: it is whole after a panic too.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn client(&self) -> Arc<dyn ClientCertVerifier> {
        self.state().client.clone()
    }

    fn server(&self) -> Arc<dyn ServerCertVerifier> {
        self.state().server.clone()
    }
}

/// The revocation list of a node's TLS configurations, shared with them: replace it and the
/// next handshake checks the new one.
///
/// Cheap to clone; every clone is the same list.
///
/// ```
/// use replicast_certs::{ClusterCa, Role};
///
/// let ca = ClusterCa::generate("prod")?;
/// let node = ca.issue_with_roles("storage-1", Role::Storage.into(), &[])?;
/// let peer = ca.issue_with_roles("client-1", Role::Client.into(), &[])?;
/// let tls = node.tls_configs(None)?;
/// assert!(!tls.revocation.is_revoked(&peer.certificate_der()));
/// let list = ca.revocation_list(None, &[peer.certificate_der()])?;
/// tls.revocation.replace(Some(list))?;
/// assert!(tls.revocation.is_revoked(&peer.certificate_der()));
/// assert_eq!(tls.revocation.list().map(|list| list.number()), Some(1));
/// # Ok::<(), replicast_certs::CertError>(())
/// ```
#[derive(Clone)]
pub struct Revocation {
    shared: Arc<Shared>,
}

impl fmt::Debug for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocation")
            .field("list", &self.shared.state().list)
            .field("generation", &self.generation())
            .finish()
    }
}

/// A node's server and client TLS configurations, and the revocation list they check.
#[derive(Clone, Debug)]
pub struct TlsConfigs {
    /// Presents the node's certificate; requires and verifies clients' (mutual TLS).
    pub server: Arc<ServerConfig>,
    /// Presents the node's certificate; verifies servers' against the name dialed.
    pub client: Arc<ClientConfig>,
    /// The list both check; replace it to revoke without rebuilding them.
    pub revocation: Revocation,
}

impl NodeIdentity {
    /// The server and client configurations of [`server_config`](Self::server_config) and
    /// [`client_config`](Self::client_config), refusing peers on `list` at the handshake
    /// (none without one); the list can be replaced later through
    /// [`TlsConfigs::revocation`].
    ///
    /// `list` must be the cluster CA's ([`RevocationList::load`] checks that).
    pub fn tls_configs(&self, list: Option<RevocationList>) -> Result<TlsConfigs, CertError> {
        let provider = ring_provider();
        let cas = self.trusted_cas().to_vec();
        let roots = cluster_roots(&cas)?;
        let (client_verifier, server_verifier) = verifiers(&roots, &provider, list.as_ref())?;
        let hints = client_verifier.root_hint_subjects().to_vec();
        let shared = Arc::new(Shared {
            roots,
            provider: provider.clone(),
            cas,
            state: RwLock::new(State {
                client: client_verifier,
                server: server_verifier,
                list,
            }),
            generation: AtomicU64::new(0),
        });
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(ClientVerifier {
                shared: shared.clone(),
                hints,
            }))
            .with_single_cert(vec![self.certificate_der()], self.private_key_der())?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        // A resumed session skips the verification of the peer's certificate, so a peer
        // revoked since its first handshake would get back in: no resumption, either side.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerVerifier {
                shared: shared.clone(),
            }))
            .with_client_auth_cert(vec![self.certificate_der()], self.private_key_der())?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.resumption = rustls::client::Resumption::disabled();
        Ok(TlsConfigs {
            server: Arc::new(server),
            client: Arc::new(client),
            revocation: Revocation { shared },
        })
    }
}

impl Revocation {
    /// Makes `list` the one every later handshake checks (`None`: no revocation).
    ///
    /// `list` must be the cluster CA's ([`RevocationList::load`] checks that); on an error
    /// the list in force stays.
    pub fn replace(&self, list: Option<RevocationList>) -> Result<(), CertError> {
        let shared = &self.shared;
        let (client, server) = verifiers(&shared.roots, &shared.provider, list.as_ref())?;
        *shared.state.write().unwrap_or_else(PoisonError::into_inner) = State {
            client,
            server,
            list,
        };
        shared.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The list in force, if any.
    pub fn list(&self) -> Option<RevocationList> {
        self.shared.state().list.clone()
    }

    /// Whether `cert` is on the list in force.
    pub fn is_revoked(&self, cert: &CertificateDer<'_>) -> bool {
        self.shared
            .state()
            .list
            .as_ref()
            .is_some_and(|list| list.is_revoked(cert))
    }

    /// A number that changes each time the list is replaced.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// The cluster CA certificates the lists must be signed by (what to load new lists with).
    pub fn trusted_cas(&self) -> &[CertificateDer<'static>] {
        &self.shared.cas
    }
}

type Verifiers = (Arc<dyn ClientCertVerifier>, Arc<dyn ServerCertVerifier>);

/// rustls' verifiers for the cluster CA, checking `list` for the peer's own certificate.
fn verifiers(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    list: Option<&RevocationList>,
) -> Result<Verifiers, CertError> {
    let mut client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    let mut server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone());
    if let Some(list) = list {
        // The CAs are the trust anchors, which no list covers; a node certificate's status is
        // always known, since there is a list of each CA.
        client = client
            .with_crls(list.ders().iter().cloned())
            .only_check_end_entity_revocation();
        server = server
            .with_crls(list.ders().iter().cloned())
            .only_check_end_entity_revocation();
    }
    Ok((client.build()?, server.build()?))
}

/// The client certificate verifier of a server configuration: the current one.
struct ClientVerifier {
    shared: Arc<Shared>,
    /// The CA names offered to clients; the roots never change, only the list.
    hints: Vec<DistinguishedName>,
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.shared
            .client()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.shared
            .client()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.shared
            .client()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.shared.client().supported_verify_schemes()
    }
}

/// The server certificate verifier of a client configuration: the current one.
struct ServerVerifier {
    shared: Arc<Shared>,
}

impl fmt::Debug for ServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerVerifier").finish_non_exhaustive()
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.shared.server().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.shared
            .server()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.shared
            .server()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.shared.server().supported_verify_schemes()
    }
}
