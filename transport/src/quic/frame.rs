//! Length-prefixed frames and the stream kind byte: the pure, allocation-bounded decoder that
//! every byte arriving from a peer passes through first.
//!
//! Every stream starts with one [`StreamKind`] byte (request and object streams follow it
//! with the [`Service`](super::Service) they are for, two bytes big-endian), then carries
//! frames. A frame is a 4-byte big-endian length followed by that many bytes of body. The length is checked against the
//! receiver's limit before anything is allocated for the body.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of the length prefix of a frame.
pub const LEN_PREFIX: usize = 4;

/// What a stream carries, announced by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StreamKind {
    /// Bidirectional: the service it is for, one request frame, answered by one reply frame.
    Request = 1,
    /// Unidirectional: a peer's ordered message channel on one connection, any number of
    /// message frames in the order they were sent, no answer.
    Channel = 2,
    /// Bidirectional: the service it is for, an object head, its chunks and an end frame,
    /// answered by one reply frame.
    Object = 3,
    /// Bidirectional: the first stream of every connection, opened by the dialer: its hello
    /// (session, whether its name is shared), answered by the acceptor's welcome.
    Hello = 4,
}

impl StreamKind {
    /// Reads a kind byte.
    pub fn from_byte(byte: u8) -> Result<Self, FrameError> {
        match byte {
            1 => Ok(Self::Request),
            2 => Ok(Self::Channel),
            3 => Ok(Self::Object),
            4 => Ok(Self::Hello),
            other => Err(FrameError::UnknownStreamKind(other)),
        }
    }

    /// The byte announcing this kind.
    pub fn as_byte(self) -> u8 {
        self as u8
    }

    /// Whether streams of this kind are bidirectional (they carry an answer).
    pub fn is_bidirectional(self) -> bool {
        !matches!(self, Self::Channel)
    }
}

/// Bytes that do not form a valid frame or message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the receiver accepts.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The receiver's limit.
        max: u64,
    },
    /// An object announces a payload larger than the receiver accepts.
    #[error("object of {len} bytes exceeds the limit of {max} bytes")]
    ObjectTooLarge {
        /// Announced payload length.
        len: u64,
        /// The receiver's limit.
        max: u64,
    },
    /// The first byte of a stream names no known kind, or a kind not allowed on this stream.
    #[error("unknown stream kind {0:#04x}")]
    UnknownStreamKind(u8),
    /// The bytes end before the frame or message does.
    #[error("truncated {what}: {needed} bytes needed, {available} available")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The frame is complete but its content is invalid.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// Why it is invalid.
        detail: String,
    },
}

impl FrameError {
    pub(crate) fn malformed(what: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Malformed {
            what,
            detail: detail.to_string(),
        }
    }
}

/// Reads the length from a frame's prefix, refusing lengths above `max_len`.
pub fn frame_len(prefix: [u8; LEN_PREFIX], max_len: u32) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    if len > max_len {
        return Err(FrameError::TooLarge {
            len: len.into(),
            max: max_len.into(),
        });
    }
    // u32 always fits in usize on the 32- and 64-bit targets quinn supports.
    Ok(len as usize)
}

/// Appends `body` as one frame (length prefix, then body) to `out`.
pub fn encode_frame(body: &[u8], max_len: u32, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = check_len(body.len(), max_len)?;
    out.reserve(LEN_PREFIX + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Checks a body length against the limit and returns it as the prefix value.
pub(crate) fn check_len(len: usize, max_len: u32) -> Result<u32, FrameError> {
    match u32::try_from(len) {
        Ok(len) if len <= max_len => Ok(len),
        _ => Err(FrameError::TooLarge {
            len: len as u64,
            max: max_len.into(),
        }),
    }
}

/// Decodes the frame at the start of `buf`.
///
/// Returns the body and the number of bytes the frame occupies, or `None` when `buf` does not
/// yet hold the whole frame. An oversized length is an error as soon as the prefix is there.
pub fn decode_frame(buf: &[u8], max_len: u32) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX>() else {
        return Ok(None);
    };
    let len = frame_len(*prefix, max_len)?;
    let end = LEN_PREFIX + len;
    Ok(buf.get(LEN_PREFIX..end).map(|body| (body, end)))
}

/// An incremental frame decoder: feed it bytes as they arrive, take whole frames out.
///
/// ```
/// use replicast_transport::quic::frame::{encode_frame, FrameDecoder};
///
/// let mut wire = Vec::new();
/// encode_frame(b"hello", 1024, &mut wire).unwrap();
/// let mut decoder = FrameDecoder::new(1024);
/// decoder.extend(&wire[..3]);
/// assert_eq!(decoder.next_frame().unwrap(), None);
/// decoder.extend(&wire[3..]);
/// assert_eq!(decoder.next_frame().unwrap().as_deref(), Some(&b"hello"[..]));
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    max_len: u32,
    buf: BytesMut,
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max_len` bytes.
    pub fn new(max_len: u32) -> Self {
        Self {
            max_len,
            buf: BytesMut::new(),
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next whole frame's body, if one has arrived.
    ///
    /// After an error the decoder's input is unusable (the framing is lost); callers reset
    /// the stream.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(prefix) = self.buf.first_chunk::<LEN_PREFIX>() else {
            return Ok(None);
        };
        let len = frame_len(*prefix, self.max_len)?;
        if self.buf.len() < LEN_PREFIX + len {
            return Ok(None);
        }
        self.buf.advance(LEN_PREFIX);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_prefix_is_refused_before_the_body_arrives() {
        let mut decoder = FrameDecoder::new(10);
        decoder.extend(&11u32.to_be_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
    }

    #[test]
    fn frames_split_and_joined_decode_in_order() {
        let mut wire = Vec::new();
        encode_frame(b"", 8, &mut wire).unwrap();
        encode_frame(b"abc", 8, &mut wire).unwrap();
        let mut decoder = FrameDecoder::new(8);
        let mut frames = Vec::new();
        for byte in &wire {
            decoder.extend(std::slice::from_ref(byte));
            while let Some(frame) = decoder.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames, vec![Bytes::new(), Bytes::from_static(b"abc")]);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn encoding_refuses_bodies_over_the_limit() {
        let mut out = Vec::new();
        assert!(matches!(
            encode_frame(&[0; 9], 8, &mut out),
            Err(FrameError::TooLarge { len: 9, max: 8 })
        ));
        assert!(out.is_empty());
    }
}
