//! Feeds arbitrary bytes to the first decoder a node applies to every message stream: the
//! driver's `Envelope` (sender instance, epoch, sequence number, body), then to the protocol
//! decoder for its body, as `node::driver` does before a role sees anything.
//!
//! Neither may panic; an accepted envelope encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replicast_node::driver::ordering::Envelope;
use replicast_node::protocol::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = postcard::from_bytes::<Envelope>(data) else {
        return;
    };
    let again = postcard::to_stdvec(&envelope).expect("a decoded envelope encodes");
    assert_eq!(
        postcard::from_bytes::<Envelope>(&again).expect("an encoded envelope decodes"),
        envelope
    );
    if let Ok(message) = decode(&envelope.body) {
        assert_eq!(decode(&encode(&message)).expect("an encoded message decodes"), message);
    }
});
