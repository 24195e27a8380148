//! A pool of worker processes (being written).
#![forbid(unsafe_code)]
