//! A handle on the masters for the operator's commands (`status`, `admin`, `check`,
//! `backup`): one QUIC endpoint with the configuration's certificate, requests on request
//! streams, a master's redirect to the primary followed.
//!
//! A one-shot command asks once through [`ask_master`]. A long-running one (`backup
//! --follow`, asking every interval) keeps a [`MasterClient`]: its endpoint keeps the
//! connection to the master that answered last, which it asks first next time, so a question
//! costs one request stream, not a handshake; when that master is gone or deposed, the next
//! question dials again and follows the redirects.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use replicast_node::config::{NodeConfig, RoleConfig};
use replicast_node::driver::bind_endpoint;
use replicast_node::protocol::{Message, decode_from, encode};
use replicast_transport::quic::Endpoint;

use super::Error;

/// How long closing waits for the master to acknowledge its closing the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The masters a node's configuration names, with where to reach them: `[masters]` (or the
/// single `[master]`); on a master's own configuration, the group, itself first (it runs on
/// this host, at `node.listen`).
fn masters_of(config: &NodeConfig) -> Vec<(String, SocketAddr)> {
    let mut masters: Vec<(String, SocketAddr)> = config
        .masters
        .iter()
        .map(|master| (master.name.as_str().to_owned(), master.address))
        .collect();
    if let RoleConfig::Master { .. } = &config.role {
        let own = config.node.name.as_str();
        masters.retain(|(name, _)| name != own);
        let mut address = config.node.listen;
        if address.ip().is_unspecified() {
            address.set_ip(match address.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        masters.insert(0, (own.to_owned(), address));
    }
    masters
}

/// The masters of a configuration, asked with its certificate from an endpoint of its own.
pub(super) struct MasterClient {
    config: NodeConfig,
    /// The masters of the configuration, with their addresses.
    known: Vec<(String, SocketAddr)>,
    endpoint: Endpoint,
    /// The master that answered last (the primary, unless none served): asked first.
    last: Option<(String, SocketAddr)>,
}

impl MasterClient {
    /// Binds the endpoint: on `node.listen`'s address with a port of the system's choosing,
    /// as one session of the certificate's name, so that the command runs beside a node
    /// started from the same file.
    pub(super) fn new(config: &NodeConfig) -> Result<Self, Error> {
        let mut own = config.clone();
        own.node.listen.set_port(0);
        let endpoint = bind_endpoint(&own, true)?;
        Ok(Self {
            config: config.clone(),
            known: masters_of(config),
            endpoint,
            last: None,
        })
    }

    /// Asks `message` on a request stream, first of the master that answered last, then of
    /// the others in the configuration's order, following a master's redirect to the
    /// primary ([`Message::PrimaryIs`]) and trying the next master when one cannot be
    /// reached; returns the answer and the name and address of the master that gave it.
    /// Bounded by `timeout` as a whole. A refusal by a master's gate is the answer (every
    /// master would refuse it): an error naming the certificate.
    pub(super) async fn ask(
        &mut self,
        message: &Message,
        timeout: Duration,
    ) -> Result<(Message, String, SocketAddr), Error> {
        let mut candidates: VecDeque<(String, SocketAddr)> = self.known.iter().cloned().collect();
        if let Some(last) = self.last.take() {
            candidates.push_front(last);
        }
        let (known, endpoint, config) = (&self.known, &self.endpoint, &self.config);
        let exchange = async {
            let mut errors = Vec::new();
            // Bounded: each master once (the last one twice), and a few redirects.
            for _ in 0..(known.len() + 5) {
                let Some((master, address)) = candidates.pop_front() else {
                    break;
                };
                // One master may be down or frozen: connecting to it gets a share of the time,
                // not all of it. A master that took the connection gets the rest for its
                // answer: a change is answered once committed in the masters' log, which may
                // take a while, and asking another master meanwhile would ask for the change
                // twice.
                let share = timeout / u32::try_from(known.len().max(1) + 1).unwrap_or(2);
                let answer = async {
                    // The endpoint's connection to this master, if it has one, else a new one.
                    let link =
                        match tokio::time::timeout(share, endpoint.link(&master, address)).await {
                            Ok(link) => link.map_err(|e| {
                                format!("cannot connect to the master {master} at {address}: {e}")
                            })?,
                            Err(_) => {
                                return Err::<Message, Error>(
                                    format!("{master} at {address} did not answer in time").into(),
                                );
                            }
                        };
                    let answer: Vec<u8> = link.request(&encode(message)).await.map_err(|e| {
                        format!("the master {master} did not answer {}: {e}", message.kind())
                    })?;
                    Ok::<Message, Error>(decode_from(&master, &answer)?)
                };
                match answer.await {
                    Ok(Message::PrimaryIs {
                        primary: Some(primary),
                        address: primary_address,
                        ..
                    }) if primary != master => {
                        let address = primary_address.or_else(|| {
                            known
                                .iter()
                                .find(|(name, _)| *name == primary)
                                .map(|(_, address)| *address)
                        });
                        if let Some(address) = address {
                            candidates.push_front((primary, address));
                        }
                    }
                    Ok(Message::PrimaryIs { .. }) => {
                        errors.push(format!(
                            "{master} knows no primary (an election is going on)"
                        ));
                    }
                    // A master's gate refused the question: every master would (the refusal
                    // names the role needed), so this is the answer.
                    Ok(Message::Refused(refusal)) => {
                        return Err(format!(
                            "the master {master} refused {}: {refusal} ({} in {})",
                            message.kind(),
                            config.tls.cert.display(),
                            config.origin.display()
                        )
                        .into());
                    }
                    Ok(answer) => return Ok((answer, master, address)),
                    Err(error) => errors.push(error.to_string()),
                }
            }
            Err::<(Message, String, SocketAddr), Error>(
                format!("no master answered: {}", errors.join("; ")).into(),
            )
        };
        let result = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no master answered within {timeout:?}"))?;
        if let Ok((_, master, address)) = &result {
            self.last = Some((master.clone(), *address));
        }
        result
    }

    /// Closes the endpoint, waiting (bounded) for the master to acknowledge.
    pub(super) async fn close(self) {
        self.endpoint.close();
        // Bounded: the master may be gone.
        let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
    }
}

/// Asks the masters named by `config` `message` once, from an endpoint of its own closed
/// afterwards ([`MasterClient::ask`]): returns the answer and the name and address of the
/// master that gave it.
pub(super) async fn ask_master(
    config: &NodeConfig,
    message: Message,
    timeout: Duration,
) -> Result<(Message, String, SocketAddr), Error> {
    let mut client = MasterClient::new(config)?;
    let result = client.ask(&message, timeout).await;
    client.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> NodeConfig {
        NodeConfig::parse(text, "/etc/replicast/node.toml").expect("a valid configuration")
    }

    const TLS: &str = "[tls]\nca = \"ca.pem\"\ncert = \"n.pem\"\nkey = \"n.key\"\n";

    #[test]
    fn the_master_is_found_from_its_own_config_a_clients_or_a_storages() {
        let master = config(&format!(
            "[node]\nname = \"m1\"\nrole = \"master\"\nlisten = \"0.0.0.0:7000\"\n{TLS}\
             [cluster]\npartitions = 4\nreplicas = 1\nstorages = [\"s1\"]\n"
        ));
        assert_eq!(
            masters_of(&master)[0].clone(),
            ("m1".to_owned(), "127.0.0.1:7000".parse().expect("address")),
            "a wildcard listen address is reached on loopback"
        );
        let client = config(&format!(
            "[node]\nname = \"c1\"\nrole = \"client\"\nlisten = \"127.0.0.1:0\"\n{TLS}\
             [master]\nname = \"m1\"\naddress = \"10.0.0.1:7000\"\n"
        ));
        assert_eq!(
            masters_of(&client)[0].clone(),
            ("m1".to_owned(), "10.0.0.1:7000".parse().expect("address"))
        );
        let storage = config(&format!(
            "[node]\nname = \"s1\"\nrole = \"storage\"\nlisten = \"127.0.0.1:7001\"\n{TLS}\
             [master]\nname = \"m1\"\naddress = \"10.0.0.1:7000\"\n\
             [storage]\npath = \"s1.redb\"\n"
        ));
        assert_eq!(
            masters_of(&storage)[0].clone(),
            ("m1".to_owned(), "10.0.0.1:7000".parse().expect("address"))
        );
    }
}
