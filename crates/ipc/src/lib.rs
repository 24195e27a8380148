//! Typed messages and file descriptors between processes (being written; see issue 3).
