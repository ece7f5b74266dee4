//! Tokio driver for the multicast protocol core.
