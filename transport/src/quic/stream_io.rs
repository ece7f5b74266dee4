//! Reading and writing frames on quinn streams, with the peer's name attached to every error.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::mpsc;

use super::compressibility::Compressibility;
use super::config::LinkConfig;
use super::copies::MAX_COPIED_MESSAGE;
use super::error::LinkError;
use super::frame::{FrameError, LEN_PREFIX, StreamKind, check_len, frame_len};
use super::object::{ChunkEncoder, DIGEST_LEN, EncodedFrame, ObjectAssembler};
use super::service::{SERVICE_LEN, Service};
use super::tail_probe::TailProbe;
use super::wire::{Reply, TAG_END, TAG_RAW, TAG_ZSTD};

/// Whom a stream talks to, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct PeerRef {
    pub(crate) name: Arc<str>,
    pub(crate) addr: SocketAddr,
    /// Told of every write, so that a pause in them is followed by a tail probe.
    pub(crate) probe: TailProbe,
}

impl PeerRef {
    pub(crate) async fn read_exact(
        &self,
        recv: &mut quinn::RecvStream,
        buf: &mut [u8],
        what: &'static str,
    ) -> Result<(), LinkError> {
        recv.read_exact(buf)
            .await
            .map_err(|e| LinkError::from_read_exact(&self.name, self.addr, what, buf.len(), e))
    }

    pub(crate) async fn read_kind(
        &self,
        recv: &mut quinn::RecvStream,
    ) -> Result<StreamKind, LinkError> {
        let mut kind = [0];
        self.read_exact(recv, &mut kind, "stream kind").await?;
        Ok(StreamKind::from_byte(kind[0])?)
    }

    /// Reads the service a request or object stream names after its kind byte.
    pub(crate) async fn read_service(
        &self,
        recv: &mut quinn::RecvStream,
    ) -> Result<Service, LinkError> {
        let mut service = [0; SERVICE_LEN];
        self.read_exact(recv, &mut service, "service").await?;
        Ok(Service::from_bytes(service))
    }

    /// Reads one frame, refusing a length above `max_len` before allocating the body.
    pub(crate) async fn read_frame(
        &self,
        recv: &mut quinn::RecvStream,
        max_len: u32,
        what: &'static str,
    ) -> Result<Vec<u8>, LinkError> {
        let mut prefix = [0; LEN_PREFIX];
        self.read_exact(recv, &mut prefix, what).await?;
        let mut body = vec![0; frame_len(prefix, max_len)?];
        self.read_exact(recv, &mut body, what).await?;
        Ok(body)
    }

    pub(crate) async fn write_all(
        &self,
        send: &mut quinn::SendStream,
        bytes: &[u8],
    ) -> Result<(), LinkError> {
        send.write_all(bytes)
            .await
            .map_err(|e| LinkError::from_write(&self.name, self.addr, e))?;
        self.probe.wrote();
        Ok(())
    }

    async fn write_encoded(
        &self,
        send: &mut quinn::SendStream,
        frame: EncodedFrame,
    ) -> Result<(), LinkError> {
        send.write_all_chunks(&mut [frame.head, frame.data])
            .await
            .map_err(|e| LinkError::from_write(&self.name, self.addr, e))?;
        self.probe.wrote();
        Ok(())
    }

    /// Reads an object's frames after its head into one buffer of `len` bytes.
    pub(crate) async fn read_object(
        &self,
        recv: &mut quinn::RecvStream,
        len: u64,
        max_frame_len: u32,
        max_object_size: u64,
    ) -> Result<Bytes, LinkError> {
        let mut assembler = ObjectAssembler::new(len, max_object_size)?;
        let mut packed = Vec::new();
        loop {
            let mut prefix = [0; LEN_PREFIX];
            self.read_exact(recv, &mut prefix, "object frame").await?;
            let frame_len = frame_len(prefix, max_frame_len)?;
            let mut tag = [0];
            if frame_len == 0 {
                return Err(FrameError::Truncated {
                    what: "object frame",
                    needed: 1,
                    available: 0,
                }
                .into());
            }
            self.read_exact(recv, &mut tag, "object frame").await?;
            match tag[0] {
                TAG_RAW => {
                    // Raw bytes go from the stream straight into their place in the payload.
                    let len = frame_len - 1;
                    let slot = assembler.slot(len)?;
                    self.read_exact(recv, slot, "raw chunk").await?;
                    assembler.commit(len)?;
                }
                TAG_ZSTD => {
                    let Some(data_len) = frame_len.checked_sub(5) else {
                        return Err(FrameError::Truncated {
                            what: "compressed chunk",
                            needed: 5,
                            available: frame_len as u64,
                        }
                        .into());
                    };
                    let mut raw_len = [0; 4];
                    self.read_exact(recv, &mut raw_len, "compressed chunk")
                        .await?;
                    packed.resize(data_len, 0);
                    self.read_exact(recv, &mut packed, "compressed chunk")
                        .await?;
                    assembler.push_zstd(u32::from_be_bytes(raw_len), &packed)?;
                }
                TAG_END => {
                    if frame_len != 1 + DIGEST_LEN {
                        return Err(FrameError::malformed(
                            "object end",
                            format_args!("{frame_len} bytes, expected {}", 1 + DIGEST_LEN),
                        )
                        .into());
                    }
                    let mut digest = [0; DIGEST_LEN];
                    self.read_exact(recv, &mut digest, "object end").await?;
                    return Ok(assembler.finish(&digest)?);
                }
                other => {
                    return Err(FrameError::malformed(
                        "object frame",
                        format_args!("unknown tag {other}"),
                    )
                    .into());
                }
            }
        }
    }

    /// Writes an object's chunks and end frame: the payload is `parts` one after the other,
    /// each cut into chunks of at most the configured size. When chunks are to be compressed,
    /// encoding runs on a blocking thread, one or two chunks ahead of the network, so
    /// compression and sending overlap and the async runtime is never held up by zstd.
    ///
    /// `history` is the link's memory of whether its payloads compress: while it says the
    /// chunks of this payload are not worth trying, they go out from this task.
    ///
    /// `copy`, when given, holds the stream's bytes before the object's frames (its opening):
    /// the frames are appended to it, and the whole returned for the tail probe's copy of the
    /// stream, if it stays within [`MAX_COPIED_MESSAGE`] (a small object); else `None`.
    pub(crate) async fn write_object(
        &self,
        send: &mut quinn::SendStream,
        parts: Vec<Bytes>,
        config: &LinkConfig,
        history: &Arc<Compressibility>,
        copy: Option<BytesMut>,
    ) -> Result<Option<Bytes>, LinkError> {
        let chunk_size = config.chunk_size as usize;
        let mut encoder = ChunkEncoder::new(
            config.compression_threshold,
            config.compression_level,
            history.clone(),
        );
        if !encoder.may_try(chunks(&parts, chunk_size).map(|chunk| chunk.len())) {
            // Nothing to compress: frames are the caller's bytes plus a few bytes of framing.
            let payload_len: usize = parts.iter().map(Bytes::len).sum();
            let mut copy = copy.filter(|copy| copy.len() + payload_len < MAX_COPIED_MESSAGE);
            for chunk in chunks(&parts, chunk_size) {
                let frame = encoder.encode_raw(chunk);
                copy_frame(&mut copy, &frame, MAX_COPIED_MESSAGE);
                self.write_encoded(send, frame).await?;
            }
            let end = encoder.finish();
            copy_frame(&mut copy, &end, MAX_COPIED_MESSAGE);
            self.write_encoded(send, end).await?;
            return Ok(copy.map(BytesMut::freeze));
        }
        let (frames_tx, mut frames) = mpsc::channel::<EncodedFrame>(2);
        tokio::task::spawn_blocking(move || {
            for chunk in chunks(&parts, chunk_size) {
                if frames_tx.blocking_send(encoder.encode(chunk)).is_err() {
                    return; // The sender gave up (stream or connection failed).
                }
            }
            let _ = frames_tx.blocking_send(encoder.finish());
        });
        let mut ended = false;
        while let Some(frame) = frames.recv().await {
            ended = frame.data.is_empty() && frame.head.get(LEN_PREFIX) == Some(&TAG_END);
            self.write_encoded(send, frame).await?;
        }
        if !ended {
            // Only a panic in the encoder thread ends the channel early.
            return Err(LinkError::Malformed(FrameError::malformed(
                "object",
                "chunk encoder stopped before the end of the payload",
            )));
        }
        // Compressed chunks are not kept: copies are for objects below the compression
        // threshold, which go raw.
        Ok(None)
    }
}

/// Appends `frame` to `copy`, or gives the copy up (`None`) once it would pass `max` bytes.
fn copy_frame(copy: &mut Option<BytesMut>, frame: &EncodedFrame, max: usize) {
    if let Some(bytes) = copy {
        if bytes.len() + frame.head.len() + frame.data.len() > max {
            *copy = None;
        } else {
            bytes.extend_from_slice(&frame.head);
            bytes.extend_from_slice(&frame.data);
        }
    }
}

/// `parts` cut into chunks of at most `chunk_size` bytes (slices, not copies), in order; an
/// empty part yields no chunk.
pub(crate) fn chunks(parts: &[Bytes], chunk_size: usize) -> impl Iterator<Item = Bytes> + '_ {
    let chunk_size = chunk_size.max(1);
    parts.iter().flat_map(move |part| {
        (0..part.len())
            .step_by(chunk_size)
            .map(move |offset| part.slice(offset..part.len().min(offset + chunk_size)))
    })
}

/// The bytes that open a request or object stream: its kind, then the service it is for.
pub(crate) fn service_opening(kind: StreamKind, service: Service) -> [u8; 1 + SERVICE_LEN] {
    let [high, low] = service.to_bytes();
    [kind.as_byte(), high, low]
}

/// Encodes `value` as one frame, preceded by `opening` (the start of a stream, or nothing).
pub(crate) fn message_frame<T: Serialize + ?Sized>(
    opening: &[u8],
    value: &T,
    max_len: u32,
    what: &'static str,
) -> Result<Vec<u8>, LinkError> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(opening);
    let start = buf.len();
    buf.extend_from_slice(&[0; LEN_PREFIX]);
    let mut buf =
        postcard::to_extend(value, buf).map_err(|source| LinkError::Encode { what, source })?;
    let len = check_len(buf.len() - start - LEN_PREFIX, max_len)?;
    buf[start..start + LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Encodes a successful reply carrying `value`.
pub(crate) fn ok_reply_frame<T: Serialize + ?Sized>(
    value: &T,
    max_len: u32,
) -> Result<Vec<u8>, LinkError> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&[0; LEN_PREFIX]);
    buf.push(Reply::Ok(&[]).status());
    let mut buf = postcard::to_extend(value, buf).map_err(|source| LinkError::Encode {
        what: "answer",
        source,
    })?;
    let len = check_len(buf.len() - LEN_PREFIX, max_len)?;
    buf[..LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Encodes an error reply; the text is cut to fit the frame limit.
pub(crate) fn error_reply_frame(reply: Reply<'_>, max_len: u32) -> Vec<u8> {
    let mut body = reply.encode();
    // An error text never needs more than a few KiB; a tiny limit still gets the status byte.
    let keep = (max_len as usize).clamp(1, 4096);
    if body.len() > keep {
        let mut cut = keep;
        while cut > 1 && std::str::from_utf8(&body[1..cut]).is_err() {
            cut -= 1;
        }
        body.truncate(cut);
    }
    let mut frame = Vec::with_capacity(LEN_PREFIX + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quic::wire::{DecodeLimits, DecodedStream, ObjectHead, decode_stream};

    const LIMITS: DecodeLimits = DecodeLimits {
        max_frame_len: 1 << 20,
        max_object_size: 1 << 20,
        max_message_len: 1 << 20,
    };

    /// The frames of `parts` as `write_object` writes them raw, copied up to `max` bytes.
    fn kept(parts: &[Bytes], chunk_size: usize, max: usize) -> Option<BytesMut> {
        let mut encoder = ChunkEncoder::new(None, 1, Arc::default());
        let mut copy = Some(BytesMut::new());
        for chunk in chunks(parts, chunk_size) {
            copy_frame(&mut copy, &encoder.encode_raw(chunk), max);
        }
        copy_frame(&mut copy, &encoder.finish(), max);
        copy
    }

    #[test]
    fn a_kept_object_decodes_as_the_stream_it_copies() {
        let parts = [Bytes::from_static(b"first "), Bytes::from_static(b"second")];
        let header = postcard::to_stdvec(&7u64).expect("encodes");
        let head = ObjectHead {
            len: 12,
            header: &header,
        };
        let opening = service_opening(StreamKind::Object, Service::DEFAULT);
        let mut stream =
            BytesMut::from(&message_frame(&opening, &head, 1 << 20, "head").expect("frames")[..]);
        stream.extend_from_slice(&kept(&parts, 4, 1_000).expect("small enough"));
        match decode_stream(&stream, LIMITS).expect("a whole object stream") {
            DecodedStream::Object {
                service,
                header: decoded,
                payload,
            } => {
                assert_eq!(service, Service::DEFAULT);
                assert_eq!(decoded, header);
                assert_eq!(&payload[..], b"first second");
            }
            other => panic!("not an object: {other:?}"),
        }
    }

    #[test]
    fn frames_past_the_limit_are_not_kept() {
        let parts = [Bytes::from(vec![3; 600])];
        assert!(
            kept(&parts, 256, 640).is_some(),
            "600 bytes and framing fit 640"
        );
        assert!(
            kept(&parts, 256, 600).is_none(),
            "framing pushes them past 600"
        );
    }
}
