//! Feeds arbitrary bytes to the QUIC frame decoders: the incremental frame decoder, the
//! reply and object-frame decoders, and the whole-stream decoder a receiving endpoint applies
//! (kind byte, frame limits, object length, chunk bounds, zstd bounds, digest).
//!
//! None of them may panic, and none may return a frame longer than its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replicast_transport::quic::frame::FrameDecoder;
use replicast_transport::quic::wire::{
    DecodeLimits, ObjectFrame, ObjectHead, Reply, decode_stream,
};

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
});
