//! # replicast-bench
//!
//! Scenarios, WAN emulation settings and reports (tables, JSON, SVG) for the unicast-versus-multicast
//! write latency comparison (`replicast bench`).
//!
//! This crate is reserved in the workspace so that crate boundaries are fixed from the start
//! (`bench -> node, transport, certs`); the transport's own micro-benchmarks live in
//! `transport/benches/` today.
