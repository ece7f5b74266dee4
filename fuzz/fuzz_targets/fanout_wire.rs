//! Feeds arbitrary bytes to every decoder of the fan-out wire (the postcard messages a writer
//! and its replicas exchange over QUIC: `ControlRequest`, `ControlAnswer`, `Membership`,
//! `Expectation`, `Bundle`, an unannounced bundle's frame, `UnicastHeader`, `UnicastAck`, the unicast batch's header and ack, also
//! inside a reply frame as a writer reads them, and an object stream's header as a replica
//! tells a single object from a batch), then drives a replica's digest `Matcher` with announcements and arrivals cut from
//! the same bytes.
//!
//! No decoder may panic; whatever one accepts encodes back to the same value; the matcher
//! delivers only bytes that match their announced digest and length, each object once.
#![no_main]

use std::collections::HashSet;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use replicast_transport::fanout::matching::{Matcher, MatcherLimits};
use replicast_transport::fanout::wire::{
    Bundle, BundleFrame, ControlAnswer, ControlRequest, Expectation, MAX_BUNDLE_PARTS, MAX_UNICAST_BATCH,
    Membership, ObjectHeader, UnicastAck, UnicastBatchAck, UnicastBatchHeader, UnicastHeader,
    digest,
};
use replicast_transport::quic::wire::Reply;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Decodes `bytes` as a `T`, as the receiving side does; an accepted value must survive an
/// encode/decode round trip unchanged.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq>(bytes: &[u8]) -> Option<T> {
    let value: T = postcard::from_bytes(bytes).ok()?;
    let again = postcard::to_stdvec(&value).expect("a decoded value encodes");
    let back: T = postcard::from_bytes(&again).expect("an encoded value decodes");
    assert!(back == value, "round trip changed a {}", std::any::type_name::<T>());
    Some(value)
}

fn decode_all(bytes: &[u8]) {
    let _ = round_trip::<ControlRequest>(bytes);
    let _ = round_trip::<ControlAnswer>(bytes);
    let _ = round_trip::<Membership>(bytes);
    let _ = round_trip::<Expectation>(bytes);
    // A bundle a replica takes has 1 to MAX_BUNDLE_PARTS parts adding up to its length.
    if let Some(bundle) = round_trip::<Bundle>(bytes) {
        if bundle.check().is_ok() {
            assert!((1..=MAX_BUNDLE_PARTS).contains(&bundle.parts.len()));
            let sum = bundle.parts.iter().try_fold(0u64, |sum, part| sum.checked_add(part.len));
            assert_eq!(sum, Some(bundle.len), "a bundle taken whose parts do not add up");
        }
    }
    // An unannounced bundle's frame: the parts a replica delivers are slices of exactly its
    // bytes after the header, and encode back to the same frame.
    let framed = Bytes::copy_from_slice(bytes);
    if let Ok(parts) = BundleFrame::decode(&framed) {
        assert!((1..=MAX_BUNDLE_PARTS).contains(&parts.len()));
        assert_eq!(BundleFrame::encode(&parts), framed, "a frame taken that does not re-encode");
    }
    let _ = round_trip::<UnicastHeader>(bytes);
    let _ = round_trip::<UnicastAck>(bytes);
    let _ = round_trip::<UnicastBatchHeader>(bytes);
    let _ = round_trip::<UnicastBatchAck>(bytes);
    // An object stream's header, with a payload length taken from the bytes: a batch the
    // replica takes has 1 to MAX_UNICAST_BATCH parts whose lengths add up to the payload's.
    let payload_len = bytes.first().map_or(0, |&len| u64::from(len));
    if let Ok(ObjectHeader::Batch(batch)) = ObjectHeader::decode(bytes, payload_len) {
        assert!((1..=MAX_UNICAST_BATCH).contains(&batch.parts.len()));
        let sum = batch.parts.iter().try_fold(0u64, |sum, part| sum.checked_add(part.len));
        assert_eq!(sum, Some(payload_len), "a batch taken whose parts do not add up");
    }
}

/// Small limits, so that eviction of unclaimed multicast objects is exercised too.
const LIMITS: MatcherLimits = MatcherLimits {
    buffered_bytes: 256,
    remembered: 1 << 16,
};

/// Interprets `data` as operations on a matcher: each op byte picks an announcement (its
/// expectation decoded from the bytes after it, or built to match a known payload), a
/// multicast arrival, a loss, a cancel or a unicast arrival. Checks what comes out.
fn drive_matcher(data: &[u8]) {
    let mut matcher: Matcher<u32> = Matcher::new(LIMITS);
    let mut delivered: HashSet<(String, u64)> = HashSet::new();
    let mut token = 0u32;
    let writers = ["writer-a", "writer-b"];
    let mut rest = data;
    for _ in 0..64 {
        let Some((&op, tail)) = rest.split_first() else {
            break;
        };
        rest = tail;
        let writer = writers[usize::from(op >> 7)];
        let key = (u64::from(op & 0x3), u64::from((op >> 2) & 0x3));
        // The next few bytes are this op's payload.
        let take = usize::from(op >> 4 & 0x7).min(rest.len());
        let (payload, tail) = rest.split_at(take);
        rest = tail;
        let payload = Bytes::copy_from_slice(payload);
        let resolved = match op % 5 {
            0 => {
                // An announcement whose fields come from the fuzzer (possibly lying).
                let Ok((expectation, tail)) = postcard::take_from_bytes::<Expectation>(rest) else {
                    continue;
                };
                rest = tail;
                token += 1;
                matcher.expect(token, writer, expectation)
            }
            1 => {
                // An honest announcement of `payload` under `key`.
                token += 1;
                let expectation = Expectation {
                    session_id: key.0,
                    multicast_id: key.1,
                    object_id: u64::from(op),
                    len: payload.len() as u64,
                    digest: digest(&payload),
                };
                matcher.expect(token, writer, expectation)
            }
            2 => matcher.multicast_arrived(key, payload),
            3 => matcher.multicast_lost(key),
            _ => {
                let _ = matcher.cancel(key, &token);
                if let Some(delivery) = matcher.unicast_arrived(writer, u64::from(op), payload) {
                    assert!(
                        delivered.insert((delivery.writer, delivery.object_id)),
                        "a unicast object delivered twice"
                    );
                }
                continue;
            }
        };
        for delivery in resolved.deliveries {
            // Multicast bytes reach the application only with a verified verdict.
            assert!(
                resolved
                    .verdicts
                    .iter()
                    .any(|(_, verdict)| *verdict
                        == replicast_transport::fanout::wire::Verdict::Verified),
                "delivered without a verified announcement"
            );
            assert!(
                delivered.insert((delivery.writer, delivery.object_id)),
                "an object delivered twice"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    decode_all(data);
    // As the writer reads an answer: a reply frame, then the answer inside it.
    if let Ok(Reply::Ok(answer)) = Reply::decode(data) {
        let _ = round_trip::<ControlAnswer>(answer);
        let _ = round_trip::<UnicastAck>(answer);
    }
    drive_matcher(data);
});
