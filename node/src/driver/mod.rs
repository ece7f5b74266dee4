//! Tokio drivers that run the sans-IO roles over QUIC links with mutual TLS.
//!
//! [`spawn`] runs any [`Role`] ([`Master`](crate::master::Master),
//! [`Storage`](crate::storage::Storage), [`Client`](crate::client::Client)) on a
//! transport [`Endpoint`](replicast_transport::quic::Endpoint): it feeds the role the
//! messages peers send with [`SystemTime::now`](std::time::SystemTime::now), fires its timers,
//! sends its transmits to the named peers and reports a peer whose connection is lost.
//! [`ClientHandle`] puts an `async` API for applications on top of a client's driver.
//!
//! Stored objects go through the transport's fan-out API when the client is started with
//! [`ClientHandle::connect_with_fanout`] and the storages with [`spawn_storage`]: the client
//! role emits each store once for all writable replicas of its object, and the driver sends
//! it on the channel of each storage the writer's strategy routes by unicast
//! ([`Fanout::route`](replicast_transport::fanout::Fanout::route): in order with the client's
//! other messages to that storage) and hands it to the fan-out for those the multicast group
//! carries; a storage the store did not reach counts as failed for the transaction. A restart of the transaction at one storage (a new generation) sends
//! its stores again to that storage alone, inline over its link.
//!
//! The roles need messages between two peers in order and without loss, or else to hear that
//! the peer is lost. The transport's [`Channel`](replicast_transport::quic::Channel) gives the
//! first by construction (one QUIC stream per direction and peer); the driver reports a peer
//! lost, once, when a channel of it breaks in either direction or the peer opens a new one,
//! and drops whatever still arrives on a channel it gave up, so nothing sent on a lost channel
//! is taken as delivered.
//!
//! Every queue between the network and a role is bounded: the endpoint's incoming queue
//! ([`LinkConfig::incoming_queue`](replicast_transport::quic::LinkConfig::incoming_queue)
//! items for all peers), and each peer's channel ([`LinkConfig::channel_queue`] messages and
//! [`LinkConfig::channel_queue_bytes`] bytes). When a role's inbound queue is full the
//! transport stops reading its peers' channels and QUIC's flow control holds the senders back;
//! while a storage takes no stores (its disk is behind) the driver holds a writer's next store
//! and what follows it, and the transport stops reading that writer's channel once they fill
//! its window ([`LinkConfig::channel_window`]);
//! when a peer's channel is full the driver waits for room (taking no other work meanwhile)
//! up to [`DriverConfig::send_wait`], then gives that peer up as lost.
//!
//! [`LinkConfig::channel_queue`]: replicast_transport::quic::LinkConfig::channel_queue
//! [`LinkConfig::channel_queue_bytes`]: replicast_transport::quic::LinkConfig::channel_queue_bytes
//! [`LinkConfig::channel_window`]: replicast_transport::quic::LinkConfig::channel_window
//!
//! Peers are found through [`DriverConfig::directory`] (the addresses this node dials), then
//! [`Role::peer_address`] (addresses the role learned: a client gets the storages' from the
//! master, to which each storage told its own) or, for peers that dialed this node, through
//! their connection: the master needs no directory, a storage names the master, a client
//! names the master (and, where the master cannot tell, the storages).

mod client_calls;
mod client_dispatch;
mod client_handle;
mod client_log;
mod connect;
mod fanout;
mod held;
mod role;
mod run;
mod timeouts;

pub use client_dispatch::{Invalidation, InvalidationListener};
pub use client_handle::{ClientError, ClientHandle};
pub use client_log::{ObjectScan, PackReport, TransactionIterator};
pub use connect::{
    Bound, ConnectError, bind, bind_endpoint, connect_from_config, driver_config, fanout_writer,
    link_config, multicast_interface,
};
pub use fanout::FanoutDeliveries;
pub use role::Role;
pub use run::{DriverConfig, DriverError, DriverHandle, DriverStats, spawn, spawn_storage};
pub use timeouts::FailureTimeouts;
