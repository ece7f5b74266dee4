//! A client role's output as its driver sends it.

use replicast_node::client::{Client, Output};
use replicast_node::protocol::Transmit;

/// What `client` sends now, in the order it made it: its messages, and each store for the
/// fan-out as one message per storage, marked with the fan-out's id (a simulation delivers
/// it as a driver sends a store on a channel, and tells the client with
/// [`Client::fanout_delivered`]), as [`Client::poll_output`] gives them.
///
/// ```
/// use replicast_node::client::{Client, ClientConfig};
/// use replicast_node::protocol::Message;
/// use replicast_testkit::sim::sent_in_order;
///
/// let mut client = Client::new("c1", "m1", ClientConfig::default());
/// client.connect();
/// let sent = sent_in_order(&mut client);
/// assert!(matches!(
///     &sent[..],
///     [(transmit, None)] if transmit.to == "m1" && transmit.message == Message::ClientHello
/// ));
/// ```
pub fn sent_in_order(client: &mut Client) -> Vec<(Transmit, Option<u64>)> {
    let mut sent = Vec::new();
    while let Some(output) = client.poll_output() {
        match output {
            Output::Message(transmit) => sent.push((transmit, None)),
            Output::Store(store) => {
                for to in store.replicas {
                    let message = store.message.clone();
                    sent.push((Transmit { to, message }, Some(store.id)));
                }
            }
        }
    }
    sent
}
