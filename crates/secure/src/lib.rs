//! Running commands built from untrusted input (work in progress).
