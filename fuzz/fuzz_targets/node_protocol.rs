//! Feeds arbitrary bytes to the node protocol decoder, which reads every message a master,
//! storage or client receives from a peer. It may refuse, never panic; whatever it accepts
//! encodes back to a message that decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replicast_node::protocol::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode(data) {
        let again = decode(&encode(&message)).expect("an encoded message decodes");
        assert_eq!(message, again);
    }
});
