//! Keep processes alive: restart policies, backoff, circuit breakers, health probes and
//! supervisor trees. (Being written; see issue 4.)
#![forbid(unsafe_code)]
#![deny(missing_docs)]
