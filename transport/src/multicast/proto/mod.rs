//! Sans-IO multicast protocol core.
