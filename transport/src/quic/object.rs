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

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use xxhash_rust::xxh3::Xxh3Default;

use super::compressibility::Compressibility;
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

/// Turns payload chunks into object frames, compressing those that shrink, and keeps the
/// checksum.
///
/// Whether a chunk is tried with zstd at all is its link's [`Compressibility`]'s call, so
/// that a link carrying incompressible payloads stops paying for tries. The zstd context is
/// made at the first try, so an object sent raw makes none.
pub(crate) struct ChunkEncoder {
    compressor: Compressor,
    threshold: usize,
    history: Arc<Compressibility>,
    hasher: Xxh3Default,
}

/// The zstd context of a [`ChunkEncoder`], made when first needed.
enum Compressor {
    /// Compression is off, or its context could not be made (out of memory).
    Off,
    /// Not made yet: no chunk was tried.
    Level(i32),
    Ready(Box<zstd::bulk::Compressor<'static>>),
}

impl ChunkEncoder {
    /// `threshold`: chunks at least this long are tried with zstd at `level`, when `history`
    /// (the link's) says a try is due.
    pub(crate) fn new(threshold: Option<u32>, level: i32, history: Arc<Compressibility>) -> Self {
        Self {
            compressor: match threshold {
                Some(_) => Compressor::Level(level),
                None => Compressor::Off,
            },
            threshold: threshold.map_or(usize::MAX, |t| t as usize),
            history,
            hasher: Xxh3Default::new(),
        }
    }

    /// Whether a chunk of `len` bytes would be tried with zstd, were a try due.
    pub(crate) fn compresses(&self, len: usize) -> bool {
        !matches!(self.compressor, Compressor::Off) && len >= self.threshold
    }

    /// Whether encoding chunks of these lengths may try zstd on one of them, as the link's
    /// history stands: if not, [`encode_raw`](Self::encode_raw) sends them with no work beyond
    /// the checksum.
    pub(crate) fn may_try(&self, chunk_lens: impl Iterator<Item = usize>) -> bool {
        let tried = chunk_lens.filter(|&len| self.compresses(len)).count();
        tried > 0 && !self.history.skips(u32::try_from(tried).unwrap_or(u32::MAX))
    }

    /// Encodes one chunk of at most `u32::MAX - 9` bytes (the caller's chunk size guarantees
    /// it), compressed if a try is due and it shrinks.
    pub(crate) fn encode(&mut self, chunk: Bytes) -> EncodedFrame {
        if self.compresses(chunk.len()) && self.history.try_next() {
            if let Some(packed) = self.try_compress(&chunk) {
                self.history.shrank();
                self.hasher.update(&chunk);
                let mut head = BytesMut::with_capacity(LEN_PREFIX + 5);
                head.put_u32(1 + 4 + packed.len() as u32);
                head.put_u8(TAG_ZSTD);
                head.put_u32(chunk.len() as u32);
                return EncodedFrame {
                    head: head.freeze(),
                    data: Bytes::from(packed),
                };
            }
            self.history.did_not_shrink();
        }
        self.raw(chunk)
    }

    /// Encodes one chunk raw without trying zstd, as one of the chunks the link's history
    /// skips (see [`may_try`](Self::may_try)).
    pub(crate) fn encode_raw(&mut self, chunk: Bytes) -> EncodedFrame {
        if self.compresses(chunk.len()) {
            // A try due here (other objects used the skip up meanwhile) is the next chunk's.
            let _ = self.history.try_next();
        }
        self.raw(chunk)
    }

    fn raw(&mut self, chunk: Bytes) -> EncodedFrame {
        self.hasher.update(&chunk);
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
        if let Compressor::Level(level) = self.compressor {
            // A context that cannot be made (out of memory) only costs compression.
            self.compressor = match zstd::bulk::Compressor::new(level) {
                Ok(compressor) => Compressor::Ready(Box::new(compressor)),
                Err(e) => {
                    tracing::debug!("zstd unavailable, sending raw chunks: {e}");
                    Compressor::Off
                }
            };
        }
        let Compressor::Ready(compressor) = &mut self.compressor else {
            return None;
        };
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

    /// `len` incompressible bytes (xorshift from `seed`).
    fn noise(len: usize, mut state: u64) -> Bytes {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect()
    }

    fn frame_body(frame: &EncodedFrame) -> Vec<u8> {
        let mut bytes = frame.head[LEN_PREFIX..].to_vec();
        bytes.extend_from_slice(&frame.data);
        bytes
    }

    #[test]
    fn compressible_chunks_are_sent_compressed_and_others_raw() {
        let mut encoder = ChunkEncoder::new(Some(1024), 1, Arc::default());
        let text = Bytes::from("abcdefgh".repeat(1000));
        let noise = noise(8000, 0x9E37_79B9_7F4A_7C15);
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
        let mut encoder = ChunkEncoder::new(Some(16), 1, Arc::default());
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
    fn objects_on_one_link_share_what_it_learned() {
        let history = Arc::new(Compressibility::default());
        let noise = noise(4096, 0x2545_F491_4F6C_DD1D);
        let link_object = || ChunkEncoder::new(Some(16), 1, history.clone());
        let first = link_object();
        assert!(
            first.may_try([noise.len()].into_iter()),
            "nothing learned yet"
        );
        let mut first = first;
        assert!(first.encode(noise.clone()).data == noise); // tried, did not shrink
        let mut second = link_object();
        assert!(
            !second.may_try([noise.len()].into_iter()),
            "the next one-chunk object is not tried"
        );
        assert!(second.encode_raw(noise.clone()).data == noise);
        assert!(
            link_object().may_try([noise.len()].into_iter()),
            "the one after it is"
        );
        assert!(
            !ChunkEncoder::new(Some(16), 1, Arc::default()).may_try([8].into_iter()),
            "below the threshold nothing is tried"
        );
        assert!(
            !ChunkEncoder::new(None, 1, Arc::default()).may_try([4096].into_iter()),
            "nor with compression off"
        );
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
