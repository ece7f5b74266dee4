//! Postcard encodings written once into a buffer of their exact size, and decodings whose
//! objects share the buffer they were read from.
//!
//! `postcard::to_stdvec` grows its vector from empty: an object's bytes land in a vector sized
//! for them, and whatever field follows them makes it grow again, moving them a second time.
//! Messages and records carry objects of up to megabytes, so they are measured first and
//! written once.
//!
//! Decoding copies an object's bytes out of the input (serde hands a deserializer a borrowed
//! slice, and `Bytes` cannot know where it came from). [`with_shared_input`] tells the
//! object's deserializer ([`shared_bytes`]) which `Bytes` the input is, so the object becomes
//! a slice of it instead. Only where the object is short-lived: a slice keeps the whole input
//! (a bundle of stores, a batch) alive, which a cache must not do.

use std::cell::RefCell;

use bytes::Bytes;
use serde::Serialize;
use serde::de::{Deserializer, Error, Visitor};

thread_local! {
    /// The input being decoded by [`with_shared_input`] on this thread, if any.
    static SHARED_INPUT: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// `value`'s postcard encoding, in a vector of exactly its length, its bytes copied once.
pub(crate) fn to_sized_vec<T: Serialize + ?Sized>(value: &T) -> postcard::Result<Vec<u8>> {
    let len = postcard::experimental::serialized_size(value)?;
    postcard::to_io(value, Vec::with_capacity(len))
}

/// Runs `decode` with `input` as the buffer that decoded objects share (see the
/// [module documentation](self)).
pub(crate) fn with_shared_input<R>(input: &Bytes, decode: impl FnOnce() -> R) -> R {
    let previous = SHARED_INPUT.with(|shared| shared.replace(Some(input.clone())));
    let result = decode();
    SHARED_INPUT.with(|shared| shared.replace(previous));
    result
}

/// Deserializes a byte string as a slice of the shared input when it lies in it (see
/// [`with_shared_input`]), as a copy otherwise.
pub(crate) fn shared_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    deserializer.deserialize_bytes(SharedBytes)
}

struct SharedBytes;

impl<'de> Visitor<'de> for SharedBytes {
    type Value = Bytes;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: Error>(self, bytes: &'de [u8]) -> Result<Bytes, E> {
        let shared = SHARED_INPUT.with(|shared| {
            let shared = shared.borrow();
            let input = shared.as_ref()?;
            let start = (bytes.as_ptr() as usize).checked_sub(input.as_ptr() as usize)?;
            // `slice_ref` panics on a slice from elsewhere: only one that lies in the input.
            (start.checked_add(bytes.len())? <= input.len()).then(|| input.slice_ref(bytes))
        });
        Ok(shared.unwrap_or_else(|| Bytes::copy_from_slice(bytes)))
    }

    fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(bytes))
    }

    fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ObjectData;

    #[test]
    fn an_object_decoded_from_a_shared_input_is_a_slice_of_it() {
        let object = ObjectData::from(vec![5u8; 4096]);
        let input = Bytes::from(to_sized_vec(&(1u32, &object)).expect("encodes"));
        let decode = || {
            postcard::from_bytes::<(u32, ObjectData)>(&input)
                .expect("decodes")
                .1
        };
        let shared = with_shared_input(&input, decode);
        assert_eq!(shared, object);
        let range = input.as_ptr_range();
        assert!(
            range.contains(&shared.as_bytes().as_ptr()),
            "a slice of the input"
        );
        // Outside `with_shared_input`, or from another buffer, the bytes are copied.
        let copied = decode();
        assert_eq!(copied, object);
        assert!(!range.contains(&copied.as_bytes().as_ptr()));
        let other = Bytes::from(vec![0u8; 16]);
        let copied = with_shared_input(&other, decode);
        assert!(!range.contains(&copied.as_bytes().as_ptr()));
    }

    #[test]
    fn the_encoding_is_postcards_in_a_vector_of_its_length() {
        let value = (9u16, vec![7u8; 100_000], 3u64);
        let bytes = to_sized_vec(&value).expect("encodes");
        assert_eq!(bytes, postcard::to_stdvec(&value).expect("encodes"));
        assert_eq!(bytes.len(), bytes.capacity());
    }
}
