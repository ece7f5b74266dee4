//! Tokio driver for the multicast protocol core.

mod error;
mod impair;
mod interface;
mod socket;

pub use error::SocketError;
pub use impair::{Impairment, ImpairmentConfig, ImpairmentStats};
pub use interface::MulticastInterface;
pub use socket::{
    BoundSocket, DEFAULT_BUFFER_SIZE, GrantedBuffers, MulticastSocketConfig, receiver_sockets,
    sender_socket,
};
