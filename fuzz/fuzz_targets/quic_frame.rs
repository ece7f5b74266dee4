//! Feeds arbitrary bytes to the QUIC frame decoders: the incremental frame decoder, the
//! reply and object-frame decoders, and the whole-stream decoder a receiving endpoint applies
//! (kind byte, frame limits, object length, chunk bounds, zstd bounds, digest).
//!
//! None of them may panic, and none may return a frame longer than its limit. A request
//! stream built from the input (its first two bytes the service, the rest the body) decodes
//! to exactly that service and body: the service a receiver routes by is the sender's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replicast_transport::quic::frame::{FrameDecoder, StreamKind, encode_frame};
use replicast_transport::quic::wire::{
    DecodeLimits, DecodedStream, ObjectFrame, ObjectHead, Reply, decode_stream,
};
use replicast_transport::quic::{SERVICE_LEN, Service};

const LIMITS: DecodeLimits = DecodeLimits {
    max_frame_len: 1 << 16,
    max_object_size: 1 << 20,
    max_message_len: 1 << 16,
};

fuzz_target!(|data: &[u8]| {
    // The first byte picks a frame limit and a split point, so short limits get exercised.
    let (max_len, split) = match data.first() {
        Some(&b) => (u32::from(b) * 64, usize::from(b % 17) + 1),
        None => (0, 1),
    };
    let mut decoder = FrameDecoder::new(max_len);
    for piece in data.chunks(split) {
        decoder.extend(piece);
        while let Ok(Some(frame)) = decoder.next_frame() {
            assert!(frame.len() <= max_len as usize);
            let _ = Reply::decode(&frame);
            let _ = ObjectFrame::decode(&frame);
            let _ = ObjectHead::decode(&frame);
        }
    }
    let _ = decode_stream(data, LIMITS);

    if let Some((service, body)) = data.split_first_chunk::<SERVICE_LEN>() {
        let service = Service::new(u16::from_be_bytes(*service));
        let mut stream = vec![StreamKind::Request.as_byte()];
        stream.extend_from_slice(&service.id().to_be_bytes());
        if encode_frame(body, LIMITS.max_frame_len, &mut stream).is_ok() {
            let body = body.to_vec();
            assert_eq!(
                decode_stream(&stream, LIMITS),
                Ok(DecodedStream::Request { service, body })
            );
        }
    }
});
