//! A narrated tour of forkyard-child: `cargo xtask demo child` (or
//! `cargo run -p forkyard-child --example demo -- [--quick]`).
//!
//! 1. spawn and capture, with the exit and its resource usage;
//! 2. a timeout that stops a whole process group, grandchildren included;
//! 3. an owner killed with SIGKILL, leaving no orphan behind;
//! 4. a table of rusage figures for a few workloads.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use forkyard_child::{Child, Input, Output};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.first().map(String::as_str) == Some("--owner") {
        // Act as an owner for part 3: spawn trees, report, then wait to be killed.
        return rt.block_on(owner());
    }
    let quick = args.iter().any(|a| a == "--quick");
    rt.block_on(async {
        spawn_and_capture().await?;
        timeout_stops_the_group().await?;
        owner_death_leaves_no_orphans().await?;
        rusage_table(quick).await?;
        println!(
            "\n== What you saw ==\n\
             1. A child's output captured (capped, so a chatty child cannot exhaust memory), its\n\
             \x20  exit code, and what it cost, read from the kernel when it was reaped.\n\
             2. A timeout that ended a whole process group, grandchildren included: SIGTERM to\n\
             \x20  the group, then SIGKILL if the grace period had run out, and the exit says we\n\
             \x20  ended it and why.\n\
             3. An owner killed with SIGKILL, which runs no code at all, and still none of its\n\
             \x20  descendants outlived it: its watchdog process saw it die and killed every group\n\
             \x20  it had registered.\n\
             4. What four workloads cost, per child. Every child above has exited and been\n\
             \x20  reaped: none is left running or as a zombie."
        );
        Ok(())
    })
}

fn heading(title: &str) {
    println!("\n== {title} ==");
}

async fn spawn_and_capture() -> Result<()> {
    heading("1. Spawn and capture");
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "echo 'hello from the child'; echo 'a warning' >&2; exit 3",
    ]);
    println!(
        "$ sh -c \"echo ...; echo ... >&2; exit 3\"   (stdout and stderr captured, 1 MiB cap each)"
    );
    let out = Child::builder(&mut cmd)
        .stdout(Output::capture(1 << 20))
        .stderr(Output::capture(1 << 20))
        .spawn()?
        .wait_with_output()
        .await?;
    println!("stdout: {:?}", out.stdout.text());
    println!("stderr: {:?}", out.stderr.text());
    println!("exit:   {} (code {:?})", out.exit, out.exit.code());
    println!(
        "cost:   {:?} CPU, {} KiB peak RSS",
        out.exit.rusage().cpu(),
        out.exit.rusage().max_rss_bytes / 1024
    );
    Ok(())
}

async fn timeout_stops_the_group() -> Result<()> {
    heading("2. A timeout stops the whole group");
    // A shell that starts two background sleeps: three processes in one group.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "sleep 600 & sleep 600 & echo started; wait"]);
    let mut child = Child::builder(&mut cmd)
        .stdin(Input::Null)
        .stdout(Output::lines())
        .timeout(Duration::from_millis(500))
        .grace(Duration::from_secs(2))
        .spawn()?;
    // Wait for the shell to say its children are running.
    while let Some(line) = child.next_line().await {
        if line.text() == "started" {
            break;
        }
    }
    let members = group_members(child.id());
    println!(
        "process group {} has {} live processes: {:?}",
        child.id(),
        members.len(),
        members
    );
    println!("timeout 500 ms, grace 2 s: waiting ...");
    let started = Instant::now();
    let exit = child.wait().await?;
    println!("after {:?}: {}", started.elapsed(), exit);
    wait_gone(&members, Duration::from_secs(10))?;
    println!(
        "process group {}: {} live processes left",
        child.id(),
        group_members(child.id()).len()
    );
    Ok(())
}

async fn owner_death_leaves_no_orphans() -> Result<()> {
    heading("3. The owner is killed with SIGKILL: no orphans");
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--owner");
    let mut owner = Child::builder(&mut cmd)
        .stdin(Input::Null)
        .stdout(Output::lines())
        .spawn()?;
    let mut pids = Vec::new();
    while let Some(line) = owner.next_line().await {
        let text = line.text();
        if text == "ready" {
            break;
        }
        if let Some(pid) = text.strip_prefix("pid ") {
            pids.push(pid.parse::<u32>()?);
        }
    }
    let watchdog = live_children(owner.id())
        .into_iter()
        .find(|&p| comm(p).as_deref() == Some("fy-watchdog"));
    println!(
        "owner {} started {} processes (shells and their sleeps): {:?}",
        owner.id(),
        pids.len(),
        pids
    );
    println!(
        "its watchdog is pid {}",
        watchdog.map_or("?".into(), |p| p.to_string())
    );
    println!(
        "kill -9 {}  (the owner runs no code: no Drop, no handler)",
        owner.id()
    );
    owner.kill().await?;
    let started = Instant::now();
    wait_gone(&pids, Duration::from_secs(10))?;
    println!(
        "all {} descendants gone {:?} after the owner died",
        pids.len(),
        started.elapsed()
    );
    println!(
        "(that time is the watchdog at work: the owner's end of its socket closed when the\n\
         \x20owner died, the watchdog read end-of-file and SIGKILLed every registered group)"
    );
    Ok(())
}

/// Part 3's owner: two shells with background sleeps, all through forkyard-child.
async fn owner() -> Result<()> {
    let mut children = Vec::new();
    for _ in 0..2 {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "sleep 600 & echo pid $!; sleep 600 & echo pid $!; echo ready; wait",
        ]);
        let mut child = Child::builder(&mut cmd)
            .stdin(Input::Null)
            .stdout(Output::lines())
            .spawn()?;
        println!("pid {}", child.id());
        while let Some(line) = child.next_line().await {
            if line.text() == "ready" {
                break;
            }
            println!("{}", line.text());
        }
        children.push(child);
    }
    println!("ready");
    std::future::pending::<()>().await;
    drop(children);
    Ok(())
}

async fn rusage_table(quick: bool) -> Result<()> {
    heading("4. What each child cost (from wait4)");
    let n = if quick { 20_000 } else { 200_000 };
    let mib = if quick { 32 } else { 256 };
    let workloads: Vec<(String, Vec<String>)> = vec![
        ("true".into(), vec!["true".into()]),
        (
            format!("count to {n} in sh"),
            vec![
                "sh".into(),
                "-c".into(),
                format!("i=0; while [ $i -lt {n} ]; do i=$((i+1)); done"),
            ],
        ),
        (
            format!("{mib} MiB through a pipe"),
            vec![
                "sh".into(),
                "-c".into(),
                format!("head -c {mib}M /dev/zero | wc -c >/dev/null"),
            ],
        ),
        ("sleep 0.2".into(), vec!["sleep".into(), "0.2".into()]),
    ];
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>12} {:>8} {:>8}",
        "workload", "exit", "user", "system", "max RSS KiB", "vol cs", "invol cs"
    );
    for (label, argv) in workloads {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let exit = Child::spawn(&mut cmd)
            .with_context(|| label.clone())?
            .wait()
            .await?;
        let ru = exit.rusage();
        println!(
            "{:<28} {:>10} {:>10.1?} {:>10.1?} {:>12} {:>8} {:>8}",
            label,
            exit.code()
                .map_or_else(|| exit.to_string(), |c| c.to_string()),
            ru.user_cpu,
            ru.system_cpu,
            ru.max_rss_bytes / 1024,
            ru.voluntary_ctx_switches,
            ru.involuntary_ctx_switches
        );
    }
    println!(
        "\nuser and system: CPU time spent in the program and in the kernel on its behalf;\n\
         max RSS: its peak resident memory; vol cs: how often it gave up the CPU to wait (for\n\
         a pipe, a timer); invol cs: how often the scheduler took the CPU from it. A reaped\n\
         child's figures include the children it reaped itself (the shell's `head` and `wc`),\n\
         which is why the pipe row shows the kernel's copying as system time and thousands of\n\
         waits as the two ends take turns; `sleep` shows that time asleep costs no CPU."
    );
    Ok(())
}

fn stat_fields(pid: u32) -> Option<(char, u32, u32)> {
    let raw = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = raw.rsplit_once(')')?.1.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|(state, _, _)| state != 'Z' && state != 'X')
}

fn group_members(pgid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| stat_fields(p).is_some_and(|(s, _, g)| g == pgid && s != 'Z'))
        .collect()
}

fn live_children(ppid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| stat_fields(p).is_some_and(|(s, pp, _)| pp == ppid && s != 'Z'))
        .collect()
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_owned())
}

/// Waits (polling /proc: a dead process has no event we could wait on) until none of `pids` is alive.
fn wait_gone(pids: &[u32], limit: Duration) -> Result<()> {
    let start = Instant::now();
    while pids.iter().any(|&p| alive(p)) {
        if start.elapsed() > limit {
            bail!(
                "still alive after {limit:?}: {:?}",
                pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
