//! Job arrays on a real one-node Slurm cluster: munged, slurmctld and slurmd (Debian's `munge`
//! and `slurm-wlm`) started by this test in a temporary folder, on loopback ports of their own,
//! and stopped by it. The script `cargo xtask slurm` writes runs the `smoke` grid of
//! `experiments/quick.toml` to the same numbers as a local sweep; a task requeued by Slurm and
//! a task warned of its time limit both resume from their checkpoints and end as an
//! uninterrupted run; a task whose cell fails leaves its failure record, which the report lists.
//!
//! Where the programs are missing, or the test does not run as root (slurmd starts the tasks
//! as their user), it says so and passes; with `SCL_REQUIRE_SLURM=1` that is a failure.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The programs the cluster needs.
const PROGRAMS: [&str; 8] = [
    "munged",
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "scontrol",
    "scancel",
    "sinfo",
];

/// A path to `program`: on `PATH`, else in `/usr/sbin` or `/sbin` (daemons on Debian).
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Why the cluster cannot run here, if it cannot.
fn missing() -> Option<String> {
    let absent: Vec<&str> = PROGRAMS.into_iter().filter(|p| find(p).is_none()).collect();
    if !absent.is_empty() {
        return Some(format!(
            "{} not found (Debian: apt-get install slurm-wlm munge)",
            absent.join(", ")
        ));
    }
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not running as root, which slurmd needs to start tasks".to_string());
    }
    None
}

/// A free loopback TCP port (free when asked; the daemons bind it moments later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Total memory in MiB (`/proc/meminfo`).
fn memory_mib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(2048, |kib| kib / 1024)
}

/// The three daemons of a one-node cluster, stopped (and only they) when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    daemons: Vec<(&'static str, Child)>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        for sub in ["munge", "state", "spool", "log"] {
            std::fs::create_dir_all(base.join(sub)).unwrap();
        }
        // munged checks that its socket folder is reachable by everyone.
        for p in [&base, &base.join("munge")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let key = base.join("munge/munge.key");
        let mut bytes = vec![0u8; 128];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").unwrap(),
            &mut bytes,
        )
        .unwrap();
        std::fs::write(&key, &bytes).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let socket = base.join("munge/munge.socket");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".to_string());
        let b = base.display();
        let conf = base.join("slurm.conf");
        std::fs::write(
            &conf,
            format!(
                "ClusterName=scltest\n\
                 SlurmctldHost=localhost(127.0.0.1)\n\
                 SlurmctldPort={ctld}\n\
                 SlurmdPort={slurmd}\n\
                 AuthType=auth/munge\n\
                 AuthInfo=socket={socket}\n\
                 CredType=cred/munge\n\
                 SlurmUser=root\n\
                 SlurmdUser=root\n\
                 StateSaveLocation={b}/state\n\
                 SlurmdSpoolDir={b}/spool\n\
                 SlurmctldPidFile={b}/slurmctld.pid\n\
                 SlurmdPidFile={b}/slurmd.pid\n\
                 SlurmctldLogFile={b}/log/slurmctld.log\n\
                 SlurmdLogFile={b}/log/slurmd.log\n\
                 ProctrackType=proctrack/linuxproc\n\
                 TaskPlugin=task/none\n\
                 SwitchType=switch/none\n\
                 MpiDefault=none\n\
                 JobAcctGatherType=jobacct_gather/none\n\
                 AccountingStorageType=accounting_storage/none\n\
                 JobCompType=jobcomp/none\n\
                 SchedulerType=sched/backfill\n\
                 SchedulerParameters=sched_interval=1\n\
                 SelectType=select/cons_tres\n\
                 SelectTypeParameters=CR_Core\n\
                 ReturnToService=2\n\
                 KillWait=30\n\
                 NodeName=localhost NodeHostname={hostname} NodeAddr=127.0.0.1 CPUs={cpus} \
                 RealMemory={memory} State=UNKNOWN\n\
                 PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n",
                ctld = free_port(),
                slurmd = free_port(),
                socket = socket.display(),
                memory = memory_mib() / 2,
            ),
        )
        .unwrap();
        let mut cluster = Cluster {
            dir,
            conf,
            daemons: Vec::new(),
        };
        let log = |name: &str| std::fs::File::create(base.join(format!("log/{name}.out"))).unwrap();
        let spawn = |name: &'static str, args: &[&str]| -> (&'static str, Child) {
            let child = Command::new(find(name).unwrap())
                .args(args)
                .env("SLURM_CONF", base.join("slurm.conf"))
                .stdin(Stdio::null())
                .stdout(log(name))
                .stderr(log(&format!("{name}-stderr")))
                .spawn()
                .unwrap_or_else(|e| panic!("starting {name}: {e}"));
            (name, child)
        };
        let key = key.display().to_string();
        let socket_arg = format!("--socket={}", socket.display());
        cluster.daemons.push(spawn(
            "munged",
            &[
                "--foreground",
                "--force",
                &format!("--key-file={key}"),
                &socket_arg,
                &format!("--pid-file={b}/munge/munged.pid"),
                &format!("--log-file={b}/log/munged.log"),
                &format!("--seed-file={b}/munge/seed"),
            ],
        ));
        cluster.wait_for("munged's socket", || socket.exists());
        let conf = cluster.conf.display().to_string();
        cluster
            .daemons
            .push(spawn("slurmctld", &["-D", "-f", &conf]));
        cluster.wait_for("slurmctld", || {
            cluster.slurm("scontrol", &["ping"]).status.success()
        });
        cluster
            .daemons
            .push(spawn("slurmd", &["-D", "-f", &conf, "-N", "localhost"]));
        cluster.wait_for("the node to be idle", || {
            let out = cluster.slurm("sinfo", &["-h", "-o", "%T"]);
            String::from_utf8_lossy(&out.stdout).trim() == "idle"
        });
        cluster
    }

    /// Runs a Slurm client program against this cluster.
    fn slurm(&self, program: &str, args: &[&str]) -> Output {
        Command::new(find(program).unwrap_or_else(|| PathBuf::from(program)))
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"))
    }

    /// Like [`Cluster::slurm`], asserting success; stdout.
    fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.slurm(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `ready` every 200 ms for up to a minute; panics with the daemons' logs after.
    fn wait_for(&self, what: &str, ready: impl Fn() -> bool) {
        let start = Instant::now();
        while !ready() {
            if start.elapsed() > Duration::from_secs(60) {
                panic!("waited a minute for {what}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The tasks of `job` still in the queue: array index -> state (`PENDING`, `RUNNING`, ...).
    /// A failing `squeue` (the controller busy for a moment) is asked again, up to a minute;
    /// a job that Slurm no longer knows has no tasks.
    fn tasks(&self, job: &str) -> BTreeMap<String, String> {
        let start = Instant::now();
        let out = loop {
            let out = self.slurm("squeue", &["-h", "-r", "-j", job, "-o", "%K %T"]);
            let error = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.success() {
                break out;
            }
            if error.contains("Invalid job id") {
                return BTreeMap::new();
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("squeue kept failing for a minute: {error}\n{}", self.logs());
            }
            eprintln!("squeue failed, asking again: {}", error.trim());
            std::thread::sleep(Duration::from_millis(300));
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (index, state) = l.trim().split_once(' ')?;
                Some((index.to_string(), state.to_string()))
            })
            .collect()
    }

    /// Waits (bounded) until every task of `job` has left the queue.
    fn wait_done(&self, job: &str, limit: Duration) {
        let start = Instant::now();
        let mut last = BTreeMap::new();
        loop {
            let tasks = self.tasks(job);
            if tasks != last {
                eprintln!(
                    "job {job} at {:.1} s: {tasks:?}",
                    start.elapsed().as_secs_f64()
                );
                last = tasks.clone();
            }
            if tasks.is_empty() {
                return;
            }
            if start.elapsed() > limit {
                panic!(
                    "job {job} still has tasks after {limit:?}: {tasks:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The tail of every daemon log, for failure messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.dir.path().join("log"))
            .unwrap()
            .flatten()
        {
            let body = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = body.lines().rev().take(40).collect();
            text.push_str(&format!("--- {}\n", entry.path().display()));
            for l in tail.into_iter().rev() {
                text.push_str(l);
                text.push('\n');
            }
        }
        text
    }

    /// Submits a script; the job id.
    fn submit(&self, script: &Path) -> String {
        self.ok("sbatch", &["--parsable", &script.display().to_string()])
            .trim()
            .to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Jobs first (their processes belong to slurmd's steps), then the daemons in reverse
        // order of their start: SIGTERM, then SIGKILL after ten seconds.
        let _ = self.slurm("scancel", &["--user=root"]);
        for (_, child) in self.daemons.iter_mut().rev() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs the xtask binary in the repository; asserts it succeeded; stdout and stderr.
fn xtask(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repository())
        .args(args)
        .output()
        .expect("the xtask binary starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "xtask {args:?}: {text}");
    text
}

/// Writes the job-array script of `experiment` (a path) into `out`; its path.
fn script(experiment: &Path, profile: Option<&str>, out: &Path, extra: &[&str]) -> PathBuf {
    let script = out.join("job.sbatch");
    let (experiment, out_s, script_s) = (
        experiment.display().to_string(),
        out.display().to_string(),
        script.display().to_string(),
    );
    let mut args = vec![
        "slurm",
        "--experiment",
        &experiment,
        "--backend",
        "flex",
        "--gpus-per-task",
        "0",
        "--cpus-per-task",
        "1",
        "--time",
        "30:00",
        "--out",
        &out_s,
        "--binary",
        env!("CARGO_BIN_EXE_xtask"),
        "--script",
        &script_s,
    ];
    if let Some(p) = profile {
        args.extend(["--profile", p]);
    }
    args.extend_from_slice(extra);
    xtask(&args);
    script
}

/// Finished cells under an experiment folder: id -> (metrics.csv, summary.json without its
/// wall-clock `seconds`).
fn finished(root: &Path) -> BTreeMap<String, (String, serde_json::Value)> {
    let mut cells = BTreeMap::new();
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let dir = entry.path();
        let summary = dir.join("summary.json");
        if !summary.is_file() {
            continue;
        }
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        json.as_object_mut().unwrap().remove("seconds");
        let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap_or_default();
        let id = entry.file_name().to_string_lossy().into_owned();
        cells.insert(id, (metrics, json));
    }
    cells
}

/// Every task log of an experiment folder, concatenated (for assertions and messages).
fn task_logs(root: &Path) -> BTreeMap<String, String> {
    let mut logs = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(root.join(".slurm")) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            logs.insert(
                name,
                std::fs::read_to_string(entry.path()).unwrap_or_default(),
            );
        }
    }
    logs
}

/// Two long digits-MLP cells (final ReLU on and off) and, as a second part, one whose loss
/// turns NaN at step 3.
const PREEMPT: &str = r#"
[experiment]
name = "preempt"
kind = "deep"
description = "two long cells to interrupt, one that fails"

[base]
dataset = "sklearn-digits"
model = "mlp"
mlp_widths = [128]
imbalance = { kind = "step", ratio = 10, n_majority = 140 }
epochs = 150
eval_every = 10
lr = 0.05
batch_size = 50
seed = 0

[grid]
final_activation = ["relu", "none"]

[parts.failing]
kind = "deep"

[parts.failing.base]
dataset = "sklearn-digits"
model = "mlp"
mlp_widths = [16]
imbalance = { kind = "step", ratio = 10, n_majority = 140 }
epochs = 2
eval_every = 1
lr = 0.05
batch_size = 50
seed = 0
inject_nan_at_step = 3

[parts.failing.grid]
final_activation = ["relu"]
"#;

#[test]
fn job_arrays_on_a_one_node_slurm_cluster() {
    if let Some(why) = missing() {
        if std::env::var_os("SCL_REQUIRE_SLURM").is_some_and(|v| v == "1") {
            panic!("SCL_REQUIRE_SLURM=1 but Slurm cannot run here: {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let cluster = Cluster::start();
    let work = tempfile::tempdir().unwrap();

    // 1. The smoke grid of the default experiment, as array tasks and as a local sweep.
    let quick = repository().join("experiments/quick.toml");
    let slurm_out = work.path().join("slurm");
    let job = cluster.submit(&script(&quick, Some("smoke"), &slurm_out, &[]));
    let local_out = work.path().join("local").display().to_string();
    let quick_s = quick.display().to_string();
    xtask(&[
        "sweep",
        "--experiment",
        &quick_s,
        "--profile",
        "smoke",
        "--out",
        &local_out,
        "--jobs",
        "1",
    ]);
    cluster.wait_done(&job, Duration::from_secs(300));
    let slurm_s = slurm_out.display().to_string();
    xtask(&[
        "report",
        "--experiment",
        &quick_s,
        "--profile",
        "smoke",
        "--out",
        &slurm_s,
    ]);
    let (ours, local) = (
        finished(&slurm_out.join("quick-smoke")),
        finished(&Path::new(&local_out).join("quick-smoke")),
    );
    assert_eq!(local.len(), 10, "the smoke grid has 10 cells");
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        local.keys().collect::<Vec<_>>(),
        "the array tasks finished other cells than the local sweep; task logs: {:#?}",
        task_logs(&slurm_out.join("quick-smoke"))
    );
    for (id, (metrics, summary)) in &local {
        let (m, s) = &ours[id];
        assert_eq!(
            m, metrics,
            "{id}: metrics.csv differs from the local sweep's"
        );
        assert_eq!(
            s, summary,
            "{id}: summary.json differs from the local sweep's"
        );
    }
    let report = std::fs::read_to_string(slurm_out.join("quick-smoke/report.md")).unwrap();
    for id in ours.keys() {
        assert!(report.contains(id.as_str()), "the report lacks {id}");
    }

    // 2. Preemption: task 0 requeued by Slurm (SIGTERM to its processes), task 1 warned of its
    // time limit (USR1 to the batch shell, as `--signal` sends it): each cell saves a
    // checkpoint, the task goes back to the queue and resumes. Task 2 fails for good.
    let file = work.path().join("preempt.toml");
    std::fs::write(&file, PREEMPT).unwrap();
    let out = work.path().join("preempt-runs");
    let root = out.join("preempt");
    let job = cluster.submit(&script(&file, None, &out, &["--signal-lead", "120"]));
    let checkpoints = || {
        std::fs::read_dir(&root)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("checkpoints/latest").exists())
                    .count()
            })
            .unwrap_or(0)
    };
    let start = Instant::now();
    while checkpoints() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "no two checkpoints after 3 minutes; tasks {:?}; logs {:#?}",
            cluster.tasks(&job),
            task_logs(&root)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        finished(&root).len(),
        0,
        "a long cell finished before it could be interrupted: make it longer"
    );
    cluster.ok("scontrol", &["requeue", &format!("{job}_0")]);
    cluster.ok(
        "scancel",
        &["--signal=USR1", "--batch", &format!("{job}_1")],
    );
    // A requeued task waits for the begin time Slurm sets about two minutes ahead (starting it
    // sooner can meet slurmd still holding the killed run's job id, which refuses the launch).
    cluster.wait_done(&job, Duration::from_secs(360));
    let logs = task_logs(&root);
    for (task, signal) in [("task-0.out", "requeue"), ("task-1.out", "USR1")] {
        let log = logs
            .get(task)
            .unwrap_or_else(|| panic!("no {task}: {logs:#?}"));
        assert!(
            log.contains("interrupted at step") && log.contains("checkpoint saved"),
            "{task} ({signal}): the cell did not save a checkpoint when interrupted:\n{log}"
        );
        assert!(
            log.contains(", run 2, "),
            "{task} ({signal}): the task did not run a second time:\n{log}\n{}",
            cluster.logs()
        );
    }
    assert!(
        logs["task-1.out"].contains("requeueing the task"),
        "task 1 did not requeue itself after USR1:\n{}",
        logs["task-1.out"]
    );
    // The same cells without interruption, locally.
    let reference = work.path().join("reference");
    let (file_s, reference_s) = (file.display().to_string(), reference.display().to_string());
    for cell in ["0", "1"] {
        xtask(&[
            "sweep",
            "--experiment",
            &file_s,
            "--out",
            &reference_s,
            "--cell",
            cell,
        ]);
    }
    let (ours, theirs) = (finished(&root), finished(&reference.join("preempt")));
    assert_eq!(theirs.len(), 2);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (id, (metrics, summary)) in &theirs {
        let (m, s) = &ours[id];
        assert_eq!(m, metrics, "{id}: the resumed run's metrics.csv differs");
        assert_eq!(s, summary, "{id}: the resumed run's summary.json differs");
    }
    // The failing task: its record, and the report lists it.
    let failures: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".failed-"))
        })
        .collect();
    assert_eq!(
        failures.len(),
        1,
        "one failure record: {failures:?}; {logs:#?}"
    );
    let record = std::fs::read_to_string(&failures[0]).unwrap();
    assert!(record.contains("step 3"), "{record}");
    let out_s = out.display().to_string();
    let code = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repository())
        .args(["report", "--experiment", &file_s, "--out", &out_s])
        .status()
        .unwrap();
    assert!(code.success());
    let report = std::fs::read_to_string(root.join("report.md")).unwrap();
    let failed_id = failures[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches(".failed-")
        .trim_end_matches(".json")
        .to_string();
    assert!(
        report.contains(&failed_id),
        "the report does not list the failed cell {failed_id}"
    );
    drop(cluster);
}
