//! Property tests of the frame codec and of whole-stream decoding: no input makes them panic,
//! and what is encoded decodes to the same thing.

use bytes::Bytes;
use proptest::prelude::*;
use replicast_transport::quic::frame::{FrameDecoder, StreamKind, decode_frame, encode_frame};
use replicast_transport::quic::wire::{
    DecodeLimits, DecodedStream, Reply, decode_stream, encode_object_stream,
};
use replicast_transport::quic::{LinkConfig, Service};

const LIMITS: DecodeLimits = DecodeLimits {
    max_frame_len: 1 << 16,
    max_object_size: 1 << 20,
    max_message_len: 1 << 16,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048), max in 0u32..4096) {
        let _ = decode_frame(&bytes, max);
        let _ = decode_stream(&bytes, LIMITS);
        let _ = Reply::decode(&bytes);
        let _ = replicast_transport::quic::wire::ObjectFrame::decode(&bytes);
        let _ = replicast_transport::quic::wire::ObjectHead::decode(&bytes);
        let mut decoder = FrameDecoder::new(max);
        for piece in bytes.chunks(7) {
            decoder.extend(piece);
            while let Ok(Some(frame)) = decoder.next_frame() {
                prop_assert!(frame.len() <= max as usize);
            }
        }
    }

    #[test]
    fn requests_decode_to_the_service_and_body_sent(
        service in any::<u16>().prop_map(Service::new),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut stream = vec![StreamKind::Request.as_byte()];
        stream.extend_from_slice(&service.id().to_be_bytes());
        encode_frame(&body, LIMITS.max_frame_len, &mut stream).unwrap();
        prop_assert_eq!(decode_stream(&stream, LIMITS).unwrap(), DecodedStream::Request { service, body });
    }

    #[test]
    fn frames_round_trip_in_any_split(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8), split in 1usize..64) {
        let mut wire = Vec::new();
        for body in &bodies {
            encode_frame(body, 300, &mut wire).unwrap();
        }
        let mut decoder = FrameDecoder::new(300);
        let mut out = Vec::new();
        for piece in wire.chunks(split) {
            decoder.extend(piece);
            while let Some(frame) = decoder.next_frame().unwrap() {
                out.push(frame.to_vec());
            }
        }
        prop_assert_eq!(out, bodies);
        prop_assert_eq!(decoder.buffered(), 0);
    }
}

proptest! {
    // Each case compresses and hashes a whole object: fewer cases keep the debug build quick.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn objects_round_trip_with_any_chunking(
        payload in proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), any::<u8>()], 0..8_000),
        header in proptest::collection::vec(any::<u8>(), 0..64),
        chunk_size in 16u32..5000,
        threshold in proptest::option::of(0u32..6000),
        service in any::<u16>().prop_map(Service::new),
    ) {
        let config = LinkConfig { chunk_size, compression_threshold: threshold, ..LinkConfig::default() };
        let payload = Bytes::from(payload);
        let stream = encode_object_stream(service, &header, &payload, &config).unwrap();
        let limits = DecodeLimits { max_frame_len: config.max_frame_len, max_object_size: 1 << 20, max_message_len: config.max_message_len };
        prop_assert_eq!(decode_stream(&stream, limits).unwrap(), DecodedStream::Object { service, header, payload });
    }

    #[test]
    fn a_corrupted_object_never_decodes_to_different_bytes(
        payload in proptest::collection::vec(prop_oneof![Just(b'x'), any::<u8>()], 1..5000),
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let config = LinkConfig { chunk_size: 700, compression_threshold: Some(100), ..LinkConfig::default() };
        let payload = Bytes::from(payload);
        let mut stream = encode_object_stream(Service::DEFAULT, b"h", &payload, &config).unwrap();
        let at = position.index(stream.len());
        stream[at] ^= flip;
        let limits = DecodeLimits { max_frame_len: config.max_frame_len, max_object_size: 1 << 20, max_message_len: config.max_message_len };
        if let Ok(DecodedStream::Object { payload: decoded, .. }) = decode_stream(&stream, limits) {
            // Only a change to the service or the application header can pass; the payload
            // is covered by the checksum.
            prop_assert_eq!(decoded, payload);
        }
    }
}
