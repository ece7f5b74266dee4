//! ZODB's 8-byte oids and tids (`bytes`, big-endian) as the node's [`Oid`] and [`Tid`].

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use replicast_node::ids::{Oid, Tid};

use crate::errors::wrong_type;

/// The 8 bytes of `value`, which must be `bytes` of length 8; `what` names it in the error.
fn eight_bytes(what: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    let bytes = value
        .cast::<PyBytes>()
        .map_err(|_| wrong_type(what, "bytes of length 8", value))?;
    let array: [u8; 8] = bytes.as_bytes().try_into().map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "{what} must be 8 bytes long, not {}",
            bytes.as_bytes().len()
        ))
    })?;
    Ok(u64::from_be_bytes(array))
}

/// An oid from Python.
pub fn oid(value: &Bound<'_, PyAny>) -> PyResult<Oid> {
    eight_bytes("oid", value).map(Oid)
}

/// A tid or serial from Python; `None` is [`Tid::ZERO`] (a new object) when `none_is_zero`.
pub fn tid(what: &str, value: &Bound<'_, PyAny>, none_is_zero: bool) -> PyResult<Tid> {
    if none_is_zero && value.is_none() {
        return Ok(Tid::ZERO);
    }
    eight_bytes(what, value).map(Tid)
}

/// The bytes ZODB uses for an oid.
pub fn oid_bytes(py: Python<'_>, oid: Oid) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &oid.0.to_be_bytes())
}

/// The bytes ZODB uses for a tid.
pub fn tid_bytes(py: Python<'_>, tid: Tid) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &tid.0.to_be_bytes())
}

/// ZODB's way of printing an oid (`0x` and the hexadecimal value), for messages.
pub fn oid_repr(oid: Oid) -> String {
    format!("0x{:02x}", oid.0)
}
