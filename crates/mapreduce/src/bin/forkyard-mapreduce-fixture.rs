//! The worker (and coordinator) the integration tests run: serves the test
//! jobs as a pool worker; as a coordinator (`coordinate`), runs a word count
//! that a test kills half-way (or that SIGKILLs itself after N map commits),
//! for the resume test; `partition KEY R`
//! prints a key's partition, for the stability test.

#![forbid(unsafe_code)]

#[path = "../../tests/it/jobs.rs"]
mod jobs;

use forkyard_mapreduce::{LineFiles, MapReduce, Workers};

fn main() {
    Workers::new()
        .job::<jobs::Count>()
        .job::<jobs::Collect>()
        .serve_if_worker();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("partition") if args.len() == 3 => {
            let r: u32 = args[2].parse().expect("R");
            println!(
                "{}",
                forkyard_mapreduce::partition(&args[1].as_bytes().to_vec(), r)
            );
        }
        Some("coordinate") if args.len() == 5 || args.len() == 6 => {
            // With a sixth argument, the job parks the first attempt to map a
            // `holdmap` record (see `jobs::Hold`), so that its map phase
            // cannot end before a test kills this coordinator.
            let count = jobs::Count {
                hold: args.get(5).map(|dir| jobs::Hold {
                    dir: dir.into(),
                    map_on: Some("holdmap".into()),
                    reduce_on: None,
                }),
                ..jobs::Count::default()
            };
            let mut job = MapReduce::new(count)
                .input(LineFiles::new([&args[1]]))
                .out_dir(&args[2])
                .workers(2)
                .reducers(3)
                .split_size(args[3].parse().expect("split size"));
            let exit_after: usize = args[4].parse().expect("exit after");
            if exit_after > 0 {
                job = job.exit_after_map_commits(exit_after);
            }
            match job.run_blocking() {
                Ok(report) => println!("{}", report.summary()),
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            }
        }
        _ => {
            eprintln!(
                "usage: forkyard-mapreduce-fixture partition KEY R | coordinate INPUT OUT SPLIT_SIZE EXIT_AFTER [HOLD_DIR]"
            );
            std::process::exit(2);
        }
    }
}
