//! Object payloads cut into chunks: the sender's chunk encoder and the receiver's
//! [`ObjectAssembler`], both free of I/O.
//!
//! The sender never copies the payload: raw chunks are slices of the caller's [`Bytes`], and
//! only compressed chunks are new allocations, one chunk at a time. The receiver checks the
//! announced length against its limit before allocating the one buffer the payload is
//! assembled in, writes each chunk in place, and compares a checksum of the whole payload at
//! the end.
//!
//! The checksum is XXH3-128, not a cryptographic digest: QUIC's AEAD already authenticates
//! every byte on the wire, so what is left to catch is a chunk lost, repeated or misplaced
//! between the two applications (a bug), and for that a fast hash suffices. SHA-256 cost 14%
//! of the CPU of a loopback transfer; XXH3 is an order of magnitude cheaper.

use bytes::{BufMut, Bytes, BytesMut};
use xxhash_rust::xxh3::Xxh3Default;

use super::frame::{FrameError, LEN_PREFIX};
use super::wire::{TAG_END, TAG_RAW, TAG_ZSTD};

/// Bytes of the checksum (XXH3-128, big-endian) that ends every object.
pub const DIGEST_LEN: usize = 16;

/// One object frame, ready to write: framing bytes, then data (possibly the caller's bytes).
#[derive(Debug)]
pub(crate) struct EncodedFrame {
    pub(crate) head: Bytes,
    pub(crate) data: Bytes,
}

/// Chunks sent raw without trying zstd after the most chunks that in a row did not shrink.
const MAX_SKIP: u32 = 16;

/// Turns payload chunks into object frames, compressing those that shrink, and keeps the
/// checksum.
///
/// Trying zstd on incompressible data (media, already compressed or encrypted objects) costs
/// CPU for nothing, so after a chunk that did not shrink the next chunk is sent raw without
/// trying, after two such failures in a row the next two, then four, up to [`MAX_SKIP`]; one
/// chunk that shrinks resets this.
pub(crate) struct ChunkEncoder {
    compressor: Option<zstd::bulk::Compressor<'static>>,
    threshold: usize,
    /// Chunks still to send raw without trying.
    skip: u32,
    /// Chunks to skip after the next failure.
    backoff: u32,
    hasher: Xxh3Default,
}

impl ChunkEncoder {
    /// `threshold`: chunks at least this long are tried with zstd at `level`.
    pub(crate) fn new(threshold: Option<u32>, level: i32) -> Self {
        let compressor = match threshold {
            // A compressor that cannot be created (out of memory) only costs compression.
            Some(_) => zstd::bulk::Compressor::new(level)
                .inspect_err(|e| tracing::debug!("zstd unavailable, sending raw chunks: {e}"))
                .ok(),
            None => None,
        };
        Self {
            compressor,
            threshold: threshold.map_or(usize::MAX, |t| t as usize),
            skip: 0,
            backoff: 1,
            hasher: Xxh3Default::new(),
        }
    }

    /// Whether a chunk of `len` bytes would be tried with zstd.
    pub(crate) fn compresses(&self, len: usize) -> bool {
        self.compressor.is_some() && len >= self.threshold
    }

    /// Encodes one chunk of at most `u32::MAX - 9` bytes (the caller's chunk size guarantees it).
    pub(crate) fn encode(&mut self, chunk: Bytes) -> EncodedFrame {
        self.hasher.update(&chunk);
        if self.compresses(chunk.len()) {
            if self.skip > 0 {
                self.skip -= 1;
            } else if let Some(packed) = self.try_compress(&chunk) {
                self.backoff = 1;
                let mut head = BytesMut::with_capacity(LEN_PREFIX + 5);
                head.put_u32(1 + 4 + packed.len() as u32);
                head.put_u8(TAG_ZSTD);
                head.put_u32(chunk.len() as u32);
                return EncodedFrame {
                    head: head.freeze(),
                    data: Bytes::from(packed),
                };
            } else {
                self.skip = self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_SKIP);
            }
        }
        let mut head = BytesMut::with_capacity(LEN_PREFIX + 1);
        head.put_u32(1 + chunk.len() as u32);
        head.put_u8(TAG_RAW);
        EncodedFrame {
            head: head.freeze(),
            data: chunk,
        }
    }

    /// The compressed chunk, if compression shrinks it.
    fn try_compress(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
        let compressor = self.compressor.as_mut()?;
        match compressor.compress(chunk) {
            Ok(packed) if packed.len() < chunk.len() => Some(packed),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!("zstd failed on a chunk, sending it raw: {e}");
                None
            }
        }
    }

    /// The frame ending the object, carrying the checksum of everything encoded.
    pub(crate) fn finish(self) -> EncodedFrame {
        let digest = self.hasher.digest128().to_be_bytes();
        let mut head = BytesMut::with_capacity(LEN_PREFIX + 1 + DIGEST_LEN);
        head.put_u32(1 + DIGEST_LEN as u32);
        head.put_u8(TAG_END);
        head.put_slice(&digest);
        EncodedFrame {
            head: head.freeze(),
            data: Bytes::new(),
        }
    }
}

/// Assembles a received payload in one buffer, refusing anything that does not fit the
/// announced length, and checks the checksum at the end.
///
/// ```
/// use replicast_transport::quic::object::ObjectAssembler;
///
/// let mut assembler = ObjectAssembler::new(5, 1024).unwrap();
/// assembler.push_raw(b"hel").unwrap();
/// assert!(assembler.push_raw(b"lo, world").is_err()); // beyond the announced 5 bytes
/// assert!(ObjectAssembler::new(2048, 1024).is_err()); // refused before allocating
/// ```
pub struct ObjectAssembler {
    buf: Vec<u8>,
    filled: usize,
    hasher: Xxh3Default,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
}

impl std::fmt::Debug for ObjectAssembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectAssembler")
            .field("len", &self.buf.len())
            .field("filled", &self.filled)
            .finish_non_exhaustive()
    }
}

impl ObjectAssembler {
    /// Prepares for a payload of `len` bytes, refused if above `max_len`.
    pub fn new(len: u64, max_len: u64) -> Result<Self, FrameError> {
        let too_large = || FrameError::ObjectTooLarge { len, max: max_len };
        if len > max_len {
            return Err(too_large());
        }
        let len = usize::try_from(len).map_err(|_| too_large())?;
        Ok(Self {
            // Zeroed pages come from the allocator lazily, so this costs no pass over memory.
            buf: vec![0; len],
            filled: 0,
            hasher: Xxh3Default::new(),
            decompressor: None,
        })
    }

    /// Bytes still expected.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.filled
    }

    /// The buffer slot for the next `len` raw bytes, to be filled in place and then committed
    /// with [`commit`](Self::commit).
    pub fn slot(&mut self, len: usize) -> Result<&mut [u8], FrameError> {
        self.check_fits(len)?;
        Ok(&mut self.buf[self.filled..self.filled + len])
    }

    /// Accepts the `len` bytes written into the last [`slot`](Self::slot).
    pub fn commit(&mut self, len: usize) -> Result<(), FrameError> {
        self.check_fits(len)?;
        self.hasher
            .update(&self.buf[self.filled..self.filled + len]);
        self.filled += len;
        Ok(())
    }

    /// Appends raw payload bytes.
    pub fn push_raw(&mut self, data: &[u8]) -> Result<(), FrameError> {
        self.slot(data.len())?.copy_from_slice(data);
        self.commit(data.len())
    }

    /// Decompresses a chunk that must expand to exactly `raw_len` bytes, straight into place.
    pub fn push_zstd(&mut self, raw_len: u32, data: &[u8]) -> Result<(), FrameError> {
        let raw_len = raw_len as usize;
        self.check_fits(raw_len)?;
        let decompressor = match &mut self.decompressor {
            Some(d) => d,
            empty => empty.insert(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| FrameError::malformed("compressed chunk", e))?,
            ),
        };
        // Decompressing into a slice of exactly `raw_len` bytes bounds the output: a chunk
        // claiming less than it expands to fails instead of growing any buffer.
        let slot = &mut self.buf[self.filled..self.filled + raw_len];
        let written = decompressor
            .decompress_to_buffer(data, slot)
            .map_err(|e| FrameError::malformed("compressed chunk", e))?;
        if written != raw_len {
            return Err(FrameError::malformed(
                "compressed chunk",
                format_args!("expanded to {written} bytes, announced {raw_len}"),
            ));
        }
        self.commit(raw_len)
    }

    /// Checks the payload is complete and matches the checksum `digest`, and hands it over.
    pub fn finish(self, digest: &[u8; DIGEST_LEN]) -> Result<Bytes, FrameError> {
        if self.remaining() != 0 {
            return Err(FrameError::Truncated {
                what: "object payload",
                needed: self.buf.len() as u64,
                available: self.filled as u64,
            });
        }
        if &self.hasher.digest128().to_be_bytes() != digest {
            return Err(FrameError::malformed(
                "object payload",
                "checksum does not match",
            ));
        }
        Ok(Bytes::from(self.buf))
    }

    fn check_fits(&self, len: usize) -> Result<(), FrameError> {
        if len > self.remaining() {
            return Err(FrameError::malformed(
                "object chunk",
                format_args!(
                    "{len} bytes where only {} of the announced {} remain",
                    self.remaining(),
                    self.buf.len()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quic::wire::ObjectFrame;

    fn frame_body(frame: &EncodedFrame) -> Vec<u8> {
        let mut bytes = frame.head[LEN_PREFIX..].to_vec();
        bytes.extend_from_slice(&frame.data);
        bytes
    }

    #[test]
    fn compressible_chunks_are_sent_compressed_and_others_raw() {
        let mut encoder = ChunkEncoder::new(Some(1024), 1);
        let text = Bytes::from("abcdefgh".repeat(1000));
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Bytes = (0..8000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        let small = Bytes::from_static(&[5; 100]);

        let packed = encoder.encode(text.clone());
        assert!(packed.data.len() < 200, "text shrinks");
        assert!(matches!(
            ObjectFrame::decode(&frame_body(&packed)),
            Ok(ObjectFrame::Zstd { raw_len: 8000, .. })
        ));
        let raw = encoder.encode(noise.clone());
        assert!(
            raw.data == noise,
            "incompressible bytes are sent as they are"
        );
        assert_eq!(raw.data.as_ptr(), noise.as_ptr(), "and not copied");
        let below = encoder.encode(small.clone());
        assert!(below.data == small, "below the threshold: raw");

        let mut assembler = ObjectAssembler::new(16_100, 1 << 20).unwrap();
        for frame in [&packed, &raw, &below] {
            match ObjectFrame::decode(&frame_body(frame)).unwrap() {
                ObjectFrame::Raw(data) => assembler.push_raw(data).unwrap(),
                ObjectFrame::Zstd { raw_len, data } => assembler.push_zstd(raw_len, data).unwrap(),
                ObjectFrame::End { .. } => unreachable!(),
            }
        }
        let end = frame_body(&encoder.finish());
        let ObjectFrame::End { digest } = ObjectFrame::decode(&end).unwrap() else {
            panic!("end frame");
        };
        let payload = assembler.finish(digest).unwrap();
        assert!(payload == [text, noise, small].concat());
    }

    #[test]
    fn after_chunks_that_do_not_shrink_the_next_ones_are_not_tried() {
        let mut encoder = ChunkEncoder::new(Some(16), 1);
        let text = Bytes::from("abcdefgh".repeat(100));
        let noise = Bytes::from((0..=255u8).collect::<Vec<_>>());
        let compressed = |frame: &EncodedFrame| frame.head[LEN_PREFIX] == TAG_ZSTD;
        assert!(!compressed(&encoder.encode(noise.clone()))); // tried, failed: skip 1
        assert!(!compressed(&encoder.encode(text.clone()))); // skipped
        assert!(compressed(&encoder.encode(text.clone()))); // tried, shrank: no skip
        assert!(!compressed(&encoder.encode(noise.clone()))); // skip 1
        assert!(!compressed(&encoder.encode(text.clone())));
        assert!(!compressed(&encoder.encode(noise.clone()))); // skip 2
        assert!(!compressed(&encoder.encode(text.clone())));
        assert!(!compressed(&encoder.encode(text.clone())));
        assert!(compressed(&encoder.encode(text.clone())));
    }

    #[test]
    fn a_compressed_chunk_expanding_beyond_its_announcement_is_refused() {
        let packed = zstd::bulk::compress(&[1u8; 4096], 1).unwrap();
        let mut assembler = ObjectAssembler::new(8192, 8192).unwrap();
        assert!(assembler.push_zstd(4000, &packed).is_err());
        let mut assembler = ObjectAssembler::new(100, 8192).unwrap();
        assert!(
            assembler.push_zstd(4096, &packed).is_err(),
            "beyond the object"
        );
    }

    #[test]
    fn an_incomplete_payload_or_wrong_digest_is_refused() {
        let mut assembler = ObjectAssembler::new(4, 4).unwrap();
        assembler.push_raw(b"abc").unwrap();
        assert!(matches!(
            assembler.finish(&[0; DIGEST_LEN]),
            Err(FrameError::Truncated { .. })
        ));
        let mut assembler = ObjectAssembler::new(3, 4).unwrap();
        assembler.push_raw(b"abc").unwrap();
        assert!(matches!(
            assembler.finish(&[0; DIGEST_LEN]),
            Err(FrameError::Malformed { .. })
        ));
    }
}
