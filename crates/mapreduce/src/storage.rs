//! Intermediate data: where map tasks leave their runs for the reducers.
//!
//! The engine talks to intermediate data only through [`Storage`], so that a
//! distributed engine can keep it elsewhere (an object store) without touching
//! the tasks. An attempt writes *staged* files under its own name; a commit
//! publishes them under the task's name, and the first commit of a task wins.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Intermediate data of one job.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Creates file `file` of attempt `attempt` (e.g. `m-00003.a1`, `part-00002`).
    fn create(&self, attempt: &str, file: &str) -> io::Result<Box<dyn Write + Send>>;
    /// Publishes everything attempt `attempt` wrote as task `task`.
    /// Returns false when another attempt of the task committed first (and
    /// discards this attempt's files).
    fn commit(&self, attempt: &str, task: &str) -> io::Result<bool>;
    /// Whether task `task` has committed.
    fn is_committed(&self, task: &str) -> io::Result<bool>;
    /// Opens file `file` of committed task `task`. The engine reads it in
    /// chunks of 4 to 64 KiB: the reader need not be buffered.
    fn open(&self, task: &str, file: &str) -> io::Result<Box<dyn Read + Send>>;
    /// Drops whatever attempt `attempt` staged.
    fn discard(&self, attempt: &str) -> io::Result<()>;
}

/// [`Storage`] in a local directory: `staging/<attempt>/` and
/// `committed/<task>/`, a commit being one `rename` of a directory.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Storage under `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage { root: root.into() }
    }

    fn staged(&self, attempt: &str) -> PathBuf {
        self.root.join("staging").join(attempt)
    }

    fn committed(&self, task: &str) -> PathBuf {
        self.root.join("committed").join(task)
    }

    /// Removes the data files of every committed task, keeping `keep` files.
    pub(crate) fn prune(&self, keep: &str) -> io::Result<()> {
        let dir = self.root.join("committed");
        let Ok(tasks) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        for task in tasks {
            for file in std::fs::read_dir(task?.path())? {
                let file = file?;
                if file.file_name() != keep {
                    std::fs::remove_file(file.path())?;
                }
            }
        }
        Ok(())
    }
}

impl Storage for LocalStorage {
    fn create(&self, attempt: &str, file: &str) -> io::Result<Box<dyn Write + Send>> {
        let dir = self.staged(attempt);
        std::fs::create_dir_all(&dir)?;
        let f = File::create(dir.join(file))?;
        Ok(Box::new(BufWriter::with_capacity(256 << 10, f)))
    }

    fn commit(&self, attempt: &str, task: &str) -> io::Result<bool> {
        std::fs::create_dir_all(self.root.join("committed"))?;
        let from = self.staged(attempt);
        if rename_no_replace(&from, &self.committed(task))? {
            Ok(true)
        } else {
            self.discard(attempt)?;
            Ok(false)
        }
    }

    fn is_committed(&self, task: &str) -> io::Result<bool> {
        self.committed(task).try_exists()
    }

    fn open(&self, task: &str, file: &str) -> io::Result<Box<dyn Read + Send>> {
        // Unbuffered: a run reader reads its own chunks (a buffer here
        // would hold 256 KiB more per run being merged).
        let f = File::open(self.committed(task).join(file))?;
        Ok(Box::new(f))
    }

    fn discard(&self, attempt: &str) -> io::Result<()> {
        match std::fs::remove_dir_all(self.staged(attempt)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// Renames `from` to `to` unless `to` exists: true if renamed, false if `to`
/// was there first. One `renameat2(RENAME_NOREPLACE)`, so two attempts racing
/// to commit cannot both win. Filesystems without the flag fall back to a
/// check and a rename, which is not atomic (a window of microseconds).
pub(crate) fn rename_no_replace(from: &Path, to: &Path) -> io::Result<bool> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            if to.try_exists()? {
                Ok(false)
            } else {
                std::fs::rename(from, to)?;
                Ok(true)
            }
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_commit_wins_and_the_second_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        for (attempt, body) in [("m-0.a0", b"first"), ("m-0.a1", b"other")] {
            let mut w = s.create(attempt, "part-00000").unwrap();
            w.write_all(body).unwrap();
            w.flush().unwrap();
        }
        assert!(s.commit("m-0.a0", "m-0").unwrap());
        assert!(!s.commit("m-0.a1", "m-0").unwrap());
        let mut got = String::new();
        s.open("m-0", "part-00000")
            .unwrap()
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "first");
        assert!(!dir.path().join("staging/m-0.a1").exists());
    }
}
