//! Errors of forkyard-mapreduce.

use std::io;
use std::path::PathBuf;

/// Why a job could not run to the end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No input was given, or the input has no splits at all because no path was named.
    #[error("no input files given")]
    NoInput,
    /// An input file could not be opened or read.
    #[error("cannot read input {path}")]
    Input {
        /// The input file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An input path is not a regular file (a directory, a socket...).
    #[error("input {path} is not a regular file")]
    NotAFile {
        /// The input path.
        path: PathBuf,
    },
    /// The output directory cannot be created or written.
    #[error("cannot write to the output directory {path}")]
    OutputDir {
        /// The output directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The output directory holds another job's output.
    #[error(
        "the output directory {path} holds another job's output ({why}); choose another directory or remove it"
    )]
    ForeignOutput {
        /// The output directory.
        path: PathBuf,
        /// What gave it away.
        why: String,
    },
    /// Another coordinator is running this job in the same output directory.
    #[error("the output directory {path} is in use by another running job")]
    Busy {
        /// The output directory.
        path: PathBuf,
    },
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// The worker pool could not be started.
    #[error("cannot start the worker pool")]
    Pool(#[source] forkyard_pool::BuildError),
    /// A task failed more often than its attempt limit allows.
    #[error("{task} failed {attempts} times; last failure: {last}")]
    TaskFailed {
        /// The task, e.g. `map task 3` or `reduce partition 1`.
        task: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// More records crashed the map function than the job allows to skip.
    #[error("too many bad records: {count} crashed the map function (limit {limit}): {records}")]
    TooManyBadRecords {
        /// How many records were found bad.
        count: usize,
        /// The job's limit.
        limit: usize,
        /// The records, as `source@position: message`, joined by `; `.
        records: String,
    },
    /// Reading or writing the job directory failed.
    #[error("job directory i/o: {what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
