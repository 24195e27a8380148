//! Running commands built from untrusted input.
#![deny(missing_docs)]

pub mod audit;
mod env;
mod error;
mod grammar;
mod harden;
mod limits;
mod paths;
mod policy;
mod program;
mod record;
mod run;
mod sandbox;

pub use env::EnvRule;
pub use error::{AuditError, Denial, Error, PolicyError, VerifyError};
pub use grammar::{Layout, Operand, PassAs, PathRule, Value};
pub use limits::Limits;
pub use policy::{Policy, PolicyBuilder, Request, ValidatedCommand};
pub use program::{ProgramRule, sha256_file};
pub use run::{EndCause, RunOutput, SecureChild, SecureCommand};
pub use sandbox::{Enforcement, Layer, LayerReport, LayerStatus, Network, Sandbox};
