//! Helpers for this crate's integration tests. Each module is self-contained (std
//! only) so that another crate's tests can copy or move it as it is.

pub(crate) mod private_postgres;
