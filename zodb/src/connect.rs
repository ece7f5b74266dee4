//! A client of the cluster from its TOML configuration file: the node's
//! [`connect_from_config`] (what `replicast client` uses too) plus what the storage reports
//! about it (name, fan-out strategy).

use std::path::Path;
use std::time::Duration;

use replicast_node::client::ClientConfig;
use replicast_node::config::{FanoutStrategy, NodeConfig, RoleConfig};
use replicast_node::driver::{ClientHandle, ConnectError, connect_from_config};
use replicast_transport::quic::Endpoint;

use crate::errors::ZodbError;

/// A connected client and what the storage reports about it.
pub struct Connected {
    /// The client.
    pub handle: ClientHandle,
    /// Its endpoint, to wait for the close to reach the peers.
    pub endpoint: Endpoint,
    /// `node.name`.
    pub name: String,
    /// `fanout.strategy`.
    pub strategy: FanoutStrategy,
}

/// Reads the client configuration at `path`, binds its endpoint and connects to the master,
/// waiting at most `timeout` for it; stores of more than `max_object_size` bytes are refused.
pub async fn connect(
    path: &Path,
    timeout: Duration,
    max_object_size: usize,
) -> Result<Connected, ZodbError> {
    let config = NodeConfig::load(path).map_err(|source| ZodbError::Config {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    let RoleConfig::Client { fanout, .. } = &config.role else {
        // connect_from_config says the same, naming the file and the role.
        return Err(ZodbError::Connect(Box::new(ConnectError::NotAClient {
            file: path.to_owned(),
            role: config.role().as_str(),
        })));
    };
    let strategy = *fanout;
    let defaults = ClientConfig::default();
    let client = ClientConfig {
        max_object_size,
        // A store waits at its storage while another transaction holds the object's lock,
        // and ZODB applications commit to the same few objects at once (ZODB's race test:
        // 64 clients on 3 objects): waits longer than the default 10 s happen there, and a
        // waiting storage is not a failed one (one that dies is lost with its link, within
        // the link's idle timeout). So a ZODB client counts a storage silent on its stores
        // as failed only after the wait every call has (`timeout`), not before; counting it
        // failed would abort the transaction (NoReplica) or mark a healthy replica out of
        // date.
        storage_timeout: defaults.storage_timeout.max(timeout),
        ..defaults
    };
    let (handle, endpoint) = connect_from_config(&config, client, timeout)
        .await
        .map_err(|error| ZodbError::Connect(Box::new(error)))?;
    Ok(Connected {
        handle,
        endpoint,
        name: config.node.name.as_str().to_owned(),
        strategy,
    })
}
