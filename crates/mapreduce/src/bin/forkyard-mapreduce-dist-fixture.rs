//! A coordinator of the distributed engine for the integration tests, run
//! as its own process so that a test can SIGKILL it mid-job by pid:
//!
//! ```sh
//! forkyard-mapreduce-dist-fixture URL INPUT OUT JOB_ID STALL_TASK
//! ```
//!
//! runs the library's word count over INPUT into OUT (3 reducers, 8 KiB
//! splits: the tests' `dist_job`) on the nodes of URL as job JOB_ID, with
//! map task STALL_TASK's worker stopping itself mid-task (no backups), so
//! that the map phase cannot end before the test kills this process.

#![forbid(unsafe_code)]

use std::time::Duration;

use forkyard_mapreduce::dist::{DistOptions, NatsConfig};
use forkyard_mapreduce::jobs::WordCount;
use forkyard_mapreduce::{Fault, LineFiles, MapReduce, Phase};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, input, out, job_id, stall] = args.as_slice() else {
        eprintln!("usage: forkyard-mapreduce-dist-fixture URL INPUT OUT JOB_ID STALL_TASK");
        std::process::exit(2);
    };
    let stall: u32 = stall.parse().expect("STALL_TASK");
    let result = MapReduce::new(WordCount::new())
        .input(LineFiles::new([input]))
        .out_dir(out)
        .reducers(3)
        .split_size(8 << 10)
        .backups(false, Duration::from_secs(600))
        .inject(Phase::Map, stall, Fault::Stop { at: 5 })
        .run_on_blocking(
            &NatsConfig::new(url),
            DistOptions::new()
                .job_id(job_id)
                // A short lease (three ack waits): the resume test waits it out.
                .ack_wait(Duration::from_secs(1)),
        );
    match result {
        Ok(done) => println!("{}", done.report.summary()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
