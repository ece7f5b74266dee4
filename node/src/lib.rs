//! # replicast-node
//!
//! The NEO-style replicated object store that runs on the replicast transport: partition table,
//! storage engine, master, storage and client roles, and two-phase commit.
//!
//! This crate is reserved in the workspace so that crate boundaries are fixed from the start
//! (`node -> transport, certs`); its contents are the subject of the node-layer issue and are not
//! built yet.
