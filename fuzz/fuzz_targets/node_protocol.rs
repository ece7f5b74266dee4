//! Feeds arbitrary bytes to the node protocol decoder, which reads every message a master,
//! storage or client receives from a peer. It may refuse, never panic; whatever it accepts
//! encodes back to a message that decodes to itself. The same bytes go to the decoders of an
//! operator's inspections on their own (`InspectAsk`, what a storage reads from `replicast
//! check`; `InspectAnswer`, what the command reads back), and an accepted range splits into
//! two halves that cover it exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replicast_node::ids::Oid;
use replicast_node::protocol::{InspectAnswer, InspectAsk, OidRange, decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode(data) {
        let again = decode(&encode(&message)).expect("an encoded message decodes");
        assert_eq!(message, again);
    }
    if let Ok(ask) = postcard::from_bytes::<InspectAsk>(data) {
        let bytes = postcard::to_stdvec(&ask).expect("an inspection encodes");
        assert_eq!(postcard::from_bytes::<InspectAsk>(&bytes).ok(), Some(ask));
    }
    if let Ok(answer) = postcard::from_bytes::<InspectAnswer>(data) {
        let bytes = postcard::to_stdvec(&answer).expect("an answer encodes");
        assert_eq!(postcard::from_bytes::<InspectAnswer>(&bytes).ok(), Some(answer));
    }
    if let Ok(range) = postcard::from_bytes::<OidRange>(data)
        && let Some((low, high)) = range.split()
    {
        assert_eq!((low.first, high.last), (range.first, range.last));
        assert_eq!(Oid(low.last.0 + 1), high.first);
        assert!(low.first <= low.last && high.first <= high.last);
    }
});
