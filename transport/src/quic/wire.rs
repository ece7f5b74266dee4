//! The bodies of frames: replies, object heads and object frames, and [`decode_stream`], a
//! pure model of how a receiver reads a whole stream (what the fuzz target drives).

use serde::{Deserialize, Serialize};

use super::frame::{FrameError, StreamKind, decode_frame};
use super::object::{DIGEST_LEN, ObjectAssembler};
use super::service::{SERVICE_LEN, Service};

/// Status byte of a reply that carries the answer.
const REPLY_OK: u8 = 0;
/// Status byte of a reply carrying an error raised by the responding application.
const REPLY_APP_ERROR: u8 = 1;
/// Status byte of a reply refusing the request's bytes (the responder found them invalid).
const REPLY_REJECTED: u8 = 2;

/// The answer to a request or an object, as it travels in a reply frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// The postcard-encoded answer.
    Ok(&'a [u8]),
    /// The responding application refused the request with this message.
    AppError(&'a str),
    /// The responder refused the bytes it received (frame too large, malformed, ...).
    Rejected(&'a str),
}

impl<'a> Reply<'a> {
    /// Decodes a reply frame's body.
    pub fn decode(body: &'a [u8]) -> Result<Self, FrameError> {
        let (&status, rest) = body.split_first().ok_or(FrameError::Truncated {
            what: "reply",
            needed: 1,
            available: 0,
        })?;
        let text =
            || std::str::from_utf8(rest).map_err(|e| FrameError::malformed("reply error text", e));
        match status {
            REPLY_OK => Ok(Self::Ok(rest)),
            REPLY_APP_ERROR => Ok(Self::AppError(text()?)),
            REPLY_REJECTED => Ok(Self::Rejected(text()?)),
            other => Err(FrameError::malformed(
                "reply",
                format_args!("unknown status {other}"),
            )),
        }
    }

    /// The status byte that starts this reply's body.
    pub(crate) fn status(&self) -> u8 {
        match self {
            Self::Ok(_) => REPLY_OK,
            Self::AppError(_) => REPLY_APP_ERROR,
            Self::Rejected(_) => REPLY_REJECTED,
        }
    }

    /// Encodes this reply's body.
    pub fn encode(&self) -> Vec<u8> {
        let rest: &[u8] = match self {
            Self::Ok(bytes) => bytes,
            Self::AppError(text) | Self::Rejected(text) => text.as_bytes(),
        };
        let mut body = Vec::with_capacity(1 + rest.len());
        body.push(self.status());
        body.extend_from_slice(rest);
        body
    }
}

/// The first frame of an object stream: the application's header and the payload's length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHead<'a> {
    /// Length of the payload in bytes (before compression).
    pub len: u64,
    /// The application's postcard-encoded header.
    #[serde(borrow)]
    pub header: &'a [u8],
}

impl<'a> ObjectHead<'a> {
    /// Decodes an object head frame's body.
    pub fn decode(body: &'a [u8]) -> Result<Self, FrameError> {
        postcard::from_bytes(body).map_err(|e| FrameError::malformed("object head", e))
    }
}

/// Tag of an object frame carrying payload bytes as they are.
pub(crate) const TAG_RAW: u8 = 0;
/// Tag of an object frame carrying zstd-compressed payload bytes.
pub(crate) const TAG_ZSTD: u8 = 1;
/// Tag of the frame ending an object, carrying the payload's checksum.
pub(crate) const TAG_END: u8 = 2;

/// A frame of an object stream after its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFrame<'a> {
    /// Payload bytes as they are.
    Raw(&'a [u8]),
    /// zstd-compressed payload bytes that expand to exactly `raw_len` bytes.
    Zstd {
        /// Length after decompression.
        raw_len: u32,
        /// The compressed bytes.
        data: &'a [u8],
    },
    /// The end of the payload, with the checksum of all of it.
    End {
        /// XXH3-128 of the uncompressed payload, big-endian.
        digest: &'a [u8; DIGEST_LEN],
    },
}

impl<'a> ObjectFrame<'a> {
    /// Decodes an object frame's body.
    pub fn decode(body: &'a [u8]) -> Result<Self, FrameError> {
        let (&tag, rest) = body.split_first().ok_or(FrameError::Truncated {
            what: "object frame",
            needed: 1,
            available: 0,
        })?;
        match tag {
            TAG_RAW => Ok(Self::Raw(rest)),
            TAG_ZSTD => {
                let (raw_len, data) =
                    rest.split_first_chunk::<4>().ok_or(FrameError::Truncated {
                        what: "compressed chunk",
                        needed: 5,
                        available: body.len() as u64,
                    })?;
                Ok(Self::Zstd {
                    raw_len: u32::from_be_bytes(*raw_len),
                    data,
                })
            }
            TAG_END => {
                let digest = rest.try_into().map_err(|_| {
                    FrameError::malformed(
                        "object end",
                        format_args!("checksum of {} bytes, expected {DIGEST_LEN}", rest.len()),
                    )
                })?;
                Ok(Self::End { digest })
            }
            other => Err(FrameError::malformed(
                "object frame",
                format_args!("unknown tag {other}"),
            )),
        }
    }
}

/// Limits a receiver applies to what a peer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest frame body (requests, answers, hellos, object frames).
    pub max_frame_len: u32,
    /// Largest object payload.
    pub max_object_size: u64,
    /// Largest message on a channel.
    pub max_message_len: u32,
}

/// A whole inbound stream, decoded by [`decode_stream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodedStream {
    /// A request: the service it is for and its postcard body.
    Request {
        /// The service it is for.
        service: Service,
        /// Its postcard body.
        body: Vec<u8>,
    },
    /// A channel's messages, in order.
    Channel(Vec<Vec<u8>>),
    /// A connection's hello.
    Hello(super::hello::Hello),
    /// An object: the service it is for, the application header and the payload, checked
    /// against its length and checksum.
    Object {
        /// The service it is for.
        service: Service,
        /// The postcard-encoded application header.
        header: Vec<u8>,
        /// The payload, checked against its announced length and checksum.
        payload: bytes::Bytes,
    },
}

/// Decodes the complete bytes of an inbound stream exactly as a receiving endpoint does, with
/// the same checks: kind byte, service (requests and objects), frame limits, object length, chunk bounds, decompression bounds,
/// checksum, and no bytes after the end.
///
/// The endpoint itself reads from the network incrementally; this function exists so the
/// decoding rules can be fuzzed and property-tested without sockets.
pub fn decode_stream(bytes: &[u8], limits: DecodeLimits) -> Result<DecodedStream, FrameError> {
    let (&kind, mut rest) = bytes.split_first().ok_or(FrameError::Truncated {
        what: "stream kind",
        needed: 1,
        available: 0,
    })?;
    let max_frame = limits.max_frame_len;
    let kind = StreamKind::from_byte(kind)?;
    let service = match kind {
        StreamKind::Request | StreamKind::Object => {
            let (service, after) =
                rest.split_first_chunk::<SERVICE_LEN>()
                    .ok_or(FrameError::Truncated {
                        what: "service",
                        needed: SERVICE_LEN as u64,
                        available: rest.len() as u64,
                    })?;
            rest = after;
            Service::from_bytes(*service)
        }
        StreamKind::Channel | StreamKind::Hello => Service::DEFAULT,
    };
    let mut next_frame = |what: &'static str, max_len: u32| -> Result<&[u8], FrameError> {
        match decode_frame(rest, max_len)? {
            Some((body, used)) => {
                rest = &rest[used..];
                Ok(body)
            }
            None => Err(FrameError::Truncated {
                what,
                needed: rest
                    .first_chunk::<4>()
                    .map_or(4, |p| 4 + u64::from(u32::from_be_bytes(*p))),
                available: rest.len() as u64,
            }),
        }
    };
    let decoded = match kind {
        StreamKind::Request => DecodedStream::Request {
            service,
            body: next_frame("request", max_frame)?.to_vec(),
        },
        StreamKind::Hello => DecodedStream::Hello(super::hello::Hello::decode(next_frame(
            "hello", max_frame,
        )?)?),
        StreamKind::Channel => {
            let mut messages = Vec::new();
            loop {
                match next_frame("channel message", limits.max_message_len) {
                    Ok(message) => messages.push(message.to_vec()),
                    // A channel is any number of messages; it ends between two of them.
                    Err(FrameError::Truncated { available: 0, .. }) => break,
                    Err(e) => return Err(e),
                }
            }
            DecodedStream::Channel(messages)
        }
        StreamKind::Object => {
            let head = ObjectHead::decode(next_frame("object head", max_frame)?)?;
            let header = head.header.to_vec();
            let mut assembler = ObjectAssembler::new(head.len, limits.max_object_size)?;
            let payload = loop {
                match ObjectFrame::decode(next_frame("object frame", max_frame)?)? {
                    ObjectFrame::Raw(data) => assembler.push_raw(data)?,
                    ObjectFrame::Zstd { raw_len, data } => assembler.push_zstd(raw_len, data)?,
                    ObjectFrame::End { digest } => break assembler.finish(digest)?,
                }
            };
            DecodedStream::Object {
                service,
                header,
                payload,
            }
        }
    };
    if !rest.is_empty() {
        return Err(FrameError::malformed(
            "stream",
            format_args!("{} bytes after the last frame", rest.len()),
        ));
    }
    Ok(decoded)
}

/// Encodes a whole object stream for `service` in memory (kind byte, service, head, chunks,
/// end frame) the way [`Link::send_object`](super::Link::send_object) writes it to the
/// network, with the chunk size and compression settings of `config`.
///
/// For tests, fuzz corpora and tools; the endpoint streams instead of building this buffer.
///
/// ```
/// use bytes::Bytes;
/// use replicast_transport::quic::wire::{decode_stream, encode_object_stream, DecodeLimits, DecodedStream};
/// use replicast_transport::quic::{LinkConfig, Service};
///
/// let config = LinkConfig::default();
/// let payload = Bytes::from(vec![7u8; 100_000]);
/// let service = Service::new(3);
/// let stream = encode_object_stream(service, b"hdr", &payload, &config).unwrap();
/// assert!(stream.len() < 1000, "compressed");
/// let limits = DecodeLimits {
///     max_frame_len: config.max_frame_len,
///     max_object_size: 1 << 20,
///     max_message_len: config.max_message_len,
/// };
/// let decoded = decode_stream(&stream, limits).unwrap();
/// assert_eq!(decoded, DecodedStream::Object { service, header: b"hdr".to_vec(), payload });
/// ```
pub fn encode_object_stream(
    service: Service,
    header: &[u8],
    payload: &bytes::Bytes,
    config: &super::LinkConfig,
) -> Result<Vec<u8>, FrameError> {
    config
        .validate()
        .map_err(|e| FrameError::malformed("configuration", e))?;
    let head = ObjectHead {
        len: payload.len() as u64,
        header,
    };
    let head = postcard::to_stdvec(&head).map_err(|e| FrameError::malformed("object head", e))?;
    let mut out = super::stream_io::service_opening(StreamKind::Object, service).to_vec();
    super::frame::encode_frame(&head, config.max_frame_len, &mut out)?;
    let mut encoder = super::object::ChunkEncoder::new(
        config.compression_threshold,
        config.compression_level,
        std::sync::Arc::default(),
    );
    let mut append = |frame: super::object::EncodedFrame| {
        out.extend_from_slice(&frame.head);
        out.extend_from_slice(&frame.data);
    };
    let parts = [payload.clone()];
    for chunk in super::stream_io::chunks(&parts, config.chunk_size as usize) {
        append(encoder.encode(chunk));
    }
    append(encoder.finish());
    Ok(out)
}
