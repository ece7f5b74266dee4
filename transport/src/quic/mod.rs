//! QUIC links with mutual TLS between named peers.
