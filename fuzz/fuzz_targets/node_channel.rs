//! Feeds arbitrary bytes to what a node applies to a peer's message channel: the transport's
//! channel framing (length-prefixed messages on one stream, `StreamKind::Channel`, checked
//! against the message limit), then the protocol decoder for each message, as
//! `node::driver` does before a role sees anything.
//!
//! Neither may panic; a message that decodes encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replicast_node::protocol::{decode, encode};
use replicast_transport::quic::StreamKind;
use replicast_transport::quic::wire::{DecodeLimits, DecodedStream, decode_stream};

const LIMITS: DecodeLimits = DecodeLimits {
    max_frame_len: 1 << 16,
    max_object_size: 1 << 20,
    max_message_len: 1 << 20,
};

fuzz_target!(|data: &[u8]| {
    let mut stream = vec![StreamKind::Channel.as_byte()];
    stream.extend_from_slice(data);
    let Ok(DecodedStream::Channel(messages)) = decode_stream(&stream, LIMITS) else {
        return;
    };
    for body in messages {
        assert!(body.len() <= LIMITS.max_message_len as usize);
        if let Ok(message) = decode(&body) {
            assert_eq!(decode(&encode(&message)).expect("an encoded message decodes"), message);
        }
    }
});
