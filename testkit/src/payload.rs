//! Payloads for tests and benchmarks: bytes that compress, and bytes that do not, each the
//! same for the same arguments, so that a run repeats and a receiver's copy can be checked
//! against a fresh one.
//!
//! ```
//! use replicast_testkit::payload::{compressible, incompressible};
//!
//! assert_eq!(incompressible(100, 7), incompressible(100, 7));
//! assert_ne!(incompressible(100, 7), incompressible(100, 8));
//! assert_eq!(compressible(4096).len(), 4096);
//! ```

use bytes::Bytes;

/// `len` bytes that zstd cannot shrink: an xorshift64 stream from `seed` (any value).
pub fn incompressible(len: usize, seed: u64) -> Bytes {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// `len` bytes that compress well without being trivially repetitive: text-like records, as
/// an object store's pickles often are.
pub fn compressible(len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!("oid={i:016x} serial={:08} state=committed;", i * 7).as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    Bytes::from(out)
}
