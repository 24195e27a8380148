//! The worker side: the same binary, started again by the pool, runs tasks.

use crate::job::Job;
use crate::task::{TaskRequest, TaskResponse, run_task};

type Runner = fn(&TaskRequest) -> Result<TaskResponse, String>;

/// The jobs a binary can run as a worker, by [`Job::name`].
///
/// A binary that runs one job calls [`serve_if_worker`]; one that runs several
/// registers each:
///
/// ```no_run
/// # #[derive(serde::Serialize, serde::Deserialize)] struct A;
/// # impl forkyard_mapreduce::Job for A { type Key = u8; type Value = u8; type Output = u8;
/// #   fn map(&self, _: &[u8], _: &mut forkyard_mapreduce::Emit<'_, u8, u8>) {}
/// #   fn reduce(&self, _: &u8, _: Vec<u8>, _: &mut dyn FnMut(u8)) {} }
/// # type B = A;
/// fn main() {
///     forkyard_mapreduce::Workers::new().job::<A>().job::<B>().serve_if_worker();
///     // ... the coordinator's main ...
/// }
/// ```
#[derive(Debug, Default)]
pub struct Workers {
    jobs: Vec<(&'static str, Runner)>,
}

impl Workers {
    /// No jobs yet.
    pub fn new() -> Self {
        Workers::default()
    }

    /// Registers job type `J`.
    pub fn job<J: Job>(mut self) -> Self {
        self.jobs.push((J::name(), run_task::<J>));
        self
    }

    /// If this process was started as a worker, serves tasks and exits;
    /// otherwise returns.
    pub fn serve_if_worker(self) {
        if forkyard_pool::worker::is_worker() {
            self.serve()
        }
    }

    /// Serves tasks until the coordinator lets go, then exits the process.
    pub fn serve(self) -> ! {
        forkyard_pool::worker::serve(move |req: TaskRequest| {
            let result = match self.jobs.iter().find(|(name, _)| *name == req.job_name) {
                Some((_, run)) => run(&req),
                None => Err(format!("this worker does not know job {}", req.job_name)),
            };
            async move { result }
        })
    }
}

/// Serves tasks of job `J` and exits if this process is a worker; returns
/// otherwise. Call it first thing in `main`.
pub fn serve_if_worker<J: Job>() {
    Workers::new().job::<J>().serve_if_worker()
}
