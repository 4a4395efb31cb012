//! `legion train --distributed mpi` and `legion infer` under `mpirun` (the `mpi` feature; the
//! tests need Open MPI's `mpirun` on the PATH, which `.ci/run` installs): two ranks train
//! the tiny model to the weights of one process with two devices; a rank killed mid-run stops
//! the whole job promptly with a clear message, and the run resumes to the weights of an
//! uninterrupted one; two ranks of `infer` merge into exactly the unsharded output.
//!
//! Loopback only (TCP on `lo`), oversubscribed (the CI machine may have fewer cores than
//! ranks), every launch bounded in time.
#![cfg(feature = "mpi")]

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use legion_backend::Device;
use legion_model::bundle::ModelBundle;
use legion_train::compare::max_abs_difference;

#[allow(dead_code)] // not every helper is used here
mod common;
use common::{bundle, copy_dir, quoted, repo, run_summary, tiny_data, train_losses};

/// `mpirun -np <ranks>` on this machine only, as root too, oversubscribed, TCP over loopback.
fn mpirun(ranks: usize) -> Command {
    let mut command = Command::new("mpirun");
    command.current_dir(repo());
    command.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "--bind-to",
        "none",
        "--mca",
        "btl",
        "self,tcp",
        "--mca",
        "btl_tcp_if_include",
        "lo",
        "--mca",
        "oob_tcp_if_include",
        "lo",
        "-np",
        &ranks.to_string(),
    ]);
    // Each rank keeps one compute thread: two ranks share the machine as two devices do.
    command.env("RAYON_NUM_THREADS", "1");
    command.arg(env!("CARGO_BIN_EXE_legion"));
    command
}

fn legion() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_legion"));
    command.current_dir(repo());
    command.env("RAYON_NUM_THREADS", "1");
    command
}

/// `train` arguments of a short tiny run on one CPU device per process (whatever
/// configs/tiny.toml's device plan): no warmup, batch 4, no evaluation, a checkpoint every step.
fn train_args(command: &mut Command, out: &Path, steps: u64) {
    command.args(["train", "--config", "configs/tiny.toml"]);
    for set in [
        format!("run.out_dir={}", quoted(out)),
        format!("run.steps={steps}"),
        "run.batch_size=4".into(),
        "run.evaluate=false".into(),
        "run.checkpoint_every=1".into(),
        "run.keep_checkpoints=50".into(),
        "run.validate_every=0".into(),
        "optim.warmup_steps=0".into(),
        "optim.lr=1e-3".into(),
        "run.devices=[\"cpu\"]".into(),
    ] {
        command.args(["--set", &set]);
    }
}

fn distributed(ranks: usize, out: &Path, steps: u64) -> Command {
    let mut command = mpirun(ranks);
    train_args(&mut command, out, steps);
    command.args(["--distributed", "mpi"]);
    command
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command` to its end within `limit`, killing it (and failing) past that.
fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mpirun starts (is Open MPI installed?)");
    let id = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done_tx.send(());
        output
    });
    if done_rx.recv_timeout(limit).is_err() {
        // SIGKILL to the launcher; its ranks lose their parent and are reaped by it.
        let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
        panic!("{command:?} ran past {limit:?}");
    }
    waiter.join().unwrap().unwrap()
}

fn check(output: &Output) -> String {
    let text = text(output);
    assert!(output.status.success(), "failed:\n{text}");
    text
}

fn load(dir: &Path) -> ModelBundle {
    ModelBundle::load(dir, &Device::flex()).expect("final bundle loads strictly")
}

const LIMIT: Duration = Duration::from_secs(300);

#[test]
fn two_mpi_ranks_train_like_one_process_with_two_devices() {
    let dir = tempfile::tempdir().unwrap();
    let (single, ranks) = (dir.path().join("single"), dir.path().join("ranks"));
    let steps = 3;
    let mut one = legion();
    train_args(&mut one, &single, steps);
    check(&run_bounded(one.args(["--devices", "cpu,cpu"]), LIMIT));
    let out = check(&run_bounded(&mut distributed(2, &ranks, steps), LIMIT));
    assert!(out.contains("2 processes; gradient all-reduce"), "{out}");

    let (a, b) = (load(&single.join("final")), load(&ranks.join("final")));
    let (diff, at) = max_abs_difference(&a.model, &b.model).unwrap();
    assert!(
        diff < 1e-4,
        "two ranks vs two devices differ by {diff} at {at}\n{out}"
    );
    eprintln!("two ranks vs two devices: max weight difference {diff:e} ({at})");
    let init = legion_model::legion::LegionConfig::tiny()
        .init(&Device::flex())
        .unwrap();
    let (moved, _) = max_abs_difference(&init, &a.model).unwrap();
    assert!(moved > 100.0 * diff.max(1e-6), "moved {moved}, diff {diff}");
    // Rank 0 alone logged: every step once, with the single process's losses.
    let (log_one, log_ranks) = (train_losses(&single), train_losses(&ranks));
    assert_eq!(
        log_ranks.iter().map(|&(s, _)| s).collect::<Vec<_>>(),
        (1..=steps).collect::<Vec<_>>()
    );
    for ((_, l1), (_, l2)) in log_one.iter().zip(&log_ranks) {
        assert!((l1 - l2).abs() < 1e-4, "losses {l1} vs {l2}");
    }
    let summary = run_summary(&ranks);
    assert_eq!(summary["ranks"], 2);
}

/// The pid of rank `rank` among the processes `mpirun` (pid `launcher`) started: its child
/// whose environment says `OMPI_COMM_WORLD_RANK=<rank>`.
fn rank_pid(launcher: u32, rank: usize) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|&b| b == 0)
                    .any(|var| var == format!("OMPI_COMM_WORLD_RANK={rank}").as_bytes())
            })
        })
}

fn latest_step(out: &Path) -> Option<u64> {
    std::fs::read_to_string(out.join("checkpoints/latest"))
        .ok()?
        .trim()
        .strip_prefix("step-")?
        .parse()
        .ok()
}

fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_killed_rank_stops_the_job_promptly_and_the_run_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, killed) = (dir.path().join("straight"), dir.path().join("killed"));
    let steps = 8;
    check(&run_bounded(&mut distributed(2, &straight, steps), LIMIT));

    let stderr_path = dir.path().join("killed.stderr");
    let mut child = distributed(2, &killed, steps)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while latest_step(&killed).is_none_or(|s| s < 3) {
        assert!(started.elapsed() < LIMIT, "no checkpoint appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let victim = rank_pid(child.id(), 1).expect("rank 1 is a child of mpirun");
    let killed_at = Instant::now();
    let _ = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status();
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    let stop_seconds = killed_at.elapsed().as_secs_f64();
    let Some(status) = status else {
        let _ = child.kill();
        panic!("the job did not stop within 60 s of a rank's death");
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    eprintln!(
        "the job stopped {stop_seconds:.2} s after rank 1 was killed; launcher said:\n{stderr}"
    );
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("rank 1") && stderr.contains("signal 9"),
        "the launcher names the dead rank: {stderr}"
    );
    assert!(
        !killed.join("final").exists(),
        "the run finished before the kill; the test needs more steps"
    );

    let resumed = check(&run_bounded(
        distributed(2, &killed, steps).arg("--resume"),
        LIMIT,
    ));
    assert!(resumed.contains("resumed from"), "{resumed}");
    let (a, b) = (load(&straight.join("final")), load(&killed.join("final")));
    let (diff, at) = max_abs_difference(&a.model, &b.model).unwrap();
    assert_eq!(diff, 0.0, "resumed weights differ at {at}");
    assert_eq!(train_losses(&killed), train_losses(&straight));

    // The same checkpoint resumes with another number of ranks (1 divides the batch too): the
    // same objective, another summation order.
    let other = dir.path().join("other");
    copy_dir(&killed, &other);
    std::fs::remove_dir_all(other.join("final")).unwrap();
    std::fs::write(other.join("checkpoints/latest"), "step-000004").unwrap();
    let mut single = legion();
    train_args(&mut single, &other, steps);
    check(&run_bounded(single.arg("--resume"), LIMIT));
    let c = load(&other.join("final"));
    let (diff, at) = max_abs_difference(&a.model, &c.model).unwrap();
    assert!(diff < 1e-4, "resumed on one rank: {diff} at {at}");
}

#[test]
fn infer_under_mpirun_shards_the_images_and_rank_0_merges() {
    let dir = tempfile::tempdir().unwrap();
    let model = bundle(dir.path());
    let infer = |command: &mut Command, out: &Path| {
        command
            .arg("infer")
            .arg("--data")
            .arg(tiny_data())
            .arg("--checkpoint")
            .arg(&model)
            .arg("--out")
            .arg(out)
            .args(["--batch-size", "4", "--max-new-tokens", "32"]);
    };
    let (whole, ranks) = (dir.path().join("whole"), dir.path().join("ranks"));
    let mut one = legion();
    infer(&mut one, &whole);
    check(&run_bounded(&mut one, LIMIT));
    let mut two = mpirun(2);
    infer(&mut two, &ranks);
    let out = check(&run_bounded(&mut two, LIMIT));
    assert!(out.contains("merged 2 shards: 40 of 40 images"), "{out}");
    assert_eq!(
        std::fs::read_to_string(whole.join("explanations.jsonl")).unwrap(),
        std::fs::read_to_string(ranks.join("explanations.jsonl")).unwrap()
    );
    for entry in std::fs::read_dir(whole.join("masks")).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            std::fs::read(entry.path()).unwrap(),
            std::fs::read(ranks.join("masks").join(entry.file_name())).unwrap(),
            "{:?}",
            entry.file_name()
        );
    }
}
