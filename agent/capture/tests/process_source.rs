//! The process source against the real kernel: real execs, the real netlink process connector,
//! the real queue. Needs root (CAP_NET_ADMIN, and reading other processes' memory for the exec
//! path); without it every test prints a loud SKIPPED line and passes.
//!
//! The connector reports every process on the host, so each test finds its own events by a
//! unique argument or pid. The tests take a lock so a burst in one does not slow another.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use picket_capture::process::ProcessSource;
use picket_capture::{CaptureError, Drops, EventTx, ShutdownTrigger, SourceStatus, shutdown_pair};
use picket_event::{Event, EventKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// Longest wait for something that should happen.
const WAIT: Duration = Duration::from_secs(5);
/// Room for a burst of starts and exits plus the rest of the host.
const QUEUE: usize = 16 * 1024;

/// Held by each running test (an async lock: it is held across awaits).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED (needs root): {test}: the netlink process connector needs CAP_NET_ADMIN !!!!!!!!\n"
    );
    true
}

fn token() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("picket-proc-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

struct Running {
    rx: mpsc::Receiver<Box<Event>>,
    drops: Drops,
    status: SourceStatus,
    trigger: ShutdownTrigger,
    task: JoinHandle<Result<(), CaptureError>>,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

async fn start() -> Running {
    let serial = SERIAL.lock().await;
    let (tx, rx) = mpsc::channel(QUEUE);
    let drops = Drops::default();
    let status = SourceStatus::default();
    let (trigger, shutdown) = shutdown_pair();
    let out = EventTx::new(ProcessSource::NAME, tx, drops.clone());
    let task = tokio::spawn(ProcessSource::new().run(out, status.clone(), shutdown));
    let deadline = Instant::now() + WAIT;
    loop {
        let s = status_of(&status);
        if s.as_deref().is_some_and(|s| s.starts_with("running")) {
            break;
        }
        assert!(!s.as_deref().is_some_and(|s| s.starts_with("unavailable")), "{s:?}");
        assert!(Instant::now() < deadline, "source never reported running: {s:?}");
        assert!(!task.is_finished(), "source ended during setup: {s:?}");
        sleep(Duration::from_millis(5)).await;
    }
    Running { rx, drops, status, trigger, task, _serial: serial }
}

fn status_of(status: &SourceStatus) -> Option<String> {
    status.snapshot().get(ProcessSource::NAME).cloned()
}

impl Running {
    /// The next event for which `pred` holds, skipping others; panics after `WAIT`.
    async fn next_where(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.rx.recv()).await {
                Ok(Some(ev)) if pred(&ev) => return *ev,
                Ok(Some(_)) => {}
                Ok(None) => panic!("queue closed while waiting for {what}"),
                Err(_) => panic!("no {what} within {WAIT:?}; status {:?}", status_of(&self.status)),
            }
        }
    }

    async fn stop(self) {
        self.trigger.trigger();
        let r = timeout(WAIT, self.task).await.expect("source stops on shutdown").unwrap();
        r.unwrap();
    }
}

fn args_of(ev: &Event) -> &[String] {
    ev.process.as_ref().and_then(|p| p.args.as_deref()).unwrap_or(&[])
}

/// Tries per case: a program that exits before /proc is read gets a thin `process.start` (no
/// argv). That is a matter of scheduling, which the burst test measures; here it is retried.
const TRIES: usize = 5;

impl Running {
    /// Run `cmd`, wait for it, and return the next `n` `process.start` events of its pid (a
    /// process that execs again keeps its pid); `None` if one of them came without /proc details.
    async fn run_and_collect(&mut self, mut cmd: Command, n: usize) -> Option<Vec<Event>> {
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        assert!(child.wait_with_output().unwrap().status.success());
        let mut evs = Vec::new();
        for _ in 0..n {
            let is_start =
                |e: &Event| e.kind == EventKind::ProcessStart && e.process.as_ref().unwrap().pid == Some(pid);
            evs.push(self.next_where("process.start of our child", is_start).await);
        }
        if let Some(thin) = evs.iter().find(|e| e.message.is_some()) {
            eprintln!("read too late, trying again: {:?}", thin.message);
            return None;
        }
        Some(evs)
    }
}

#[tokio::test]
async fn exec_is_reported_with_exec_path_argv_parent_and_user() {
    if skip_unless_root("exec_is_reported_with_exec_path_argv_parent_and_user") {
        return;
    }
    let mut src = start().await;
    for attempt in 1..=TRIES {
        let tok = token();
        let script = format!("exec /bin/true arg1 {tok}");
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", &script]);
        // The shell's own exec comes first, then the one it made itself into.
        let Some(evs) = src.run_and_collect(cmd, 2).await else {
            assert!(attempt < TRIES, "read too late {TRIES} times");
            continue;
        };
        let (sh, ev) = (&evs[0], &evs[1]);
        assert_eq!(sh.process.as_ref().unwrap().executable.as_deref(), Some("/bin/sh"));
        assert_eq!(args_of(sh), ["/bin/sh", "-c", script.as_str()]);

        assert_eq!(ev.event.module.as_deref(), Some("netlink"));
        assert_eq!(ev.event.dataset.as_deref(), Some("picket.process"));
        let p = ev.process.as_ref().unwrap();
        assert_eq!(p.executable.as_deref(), Some("/bin/true"), "execve's filename, not /usr/bin/true");
        assert_eq!(args_of(ev), ["/bin/true", "arg1", tok.as_str()]);
        assert_eq!(p.command_line.as_deref(), Some(format!("/bin/true arg1 {tok}").as_str()));
        assert_eq!(p.name.as_deref(), Some("true"));
        let real = std::fs::canonicalize("/bin/true").unwrap();
        assert_eq!(p.resolved_executable.as_deref(), real.to_str());
        assert_eq!(p.working_directory.as_deref(), std::env::current_dir().unwrap().to_str());
        assert!(p.start_ticks.is_some_and(|t| t > 0));
        let parent = p.parent.as_ref().expect("parent");
        assert_eq!(parent.pid, Some(std::process::id()));
        let me = std::env::current_exe().unwrap();
        assert!(
            parent.name.as_deref().is_some_and(|n| me.to_str().unwrap().ends_with(n)),
            "parent is this test binary: {parent:?}"
        );
        let user = ev.user.as_ref().unwrap();
        assert_eq!(user.id.as_deref(), Some("0"));
        assert_eq!(user.name.as_deref(), Some("root"));
        // The kernel's exec time, converted to wall time: close to now.
        let age = std::time::SystemTime::now().duration_since(ev.timestamp.to_system_time()).unwrap();
        assert!(age < WAIT, "{age:?}");
        break;
    }
    src.stop().await;
}

#[tokio::test]
async fn a_symlinked_program_keeps_the_name_it_was_started_by() {
    if skip_unless_root("a_symlinked_program_keeps_the_name_it_was_started_by") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir_path = std::fs::canonicalize(dir.path()).unwrap();
    // A shell under another name, as BusyBox applets are: it lives long enough (the sleep) to be
    // read every time, and names itself in argv[0] as a shell does.
    let applet = dir_path.join("applet");
    std::os::unix::fs::symlink("/bin/sh", &applet).unwrap();
    let real = std::fs::canonicalize("/bin/sh").unwrap();
    let mut src = start().await;

    // BusyBox-style: run through a symlink by its absolute path...
    for attempt in 1..=TRIES {
        let tok = token();
        let mut cmd = Command::new(&applet);
        cmd.args(["-c", "sleep 0.02", &tok]);
        let Some(evs) = src.run_and_collect(cmd, 1).await else {
            assert!(attempt < TRIES, "read too late {TRIES} times");
            continue;
        };
        let p = evs[0].process.as_ref().unwrap();
        assert_eq!(args_of(&evs[0]), [applet.to_str().unwrap(), "-c", "sleep 0.02", tok.as_str()]);
        assert_eq!(p.executable.as_deref(), applet.to_str());
        assert_eq!(p.name.as_deref(), Some("applet"));
        assert_eq!(p.resolved_executable.as_deref(), real.to_str());
        break;
    }

    // ...and by a relative path, made absolute against the process's working directory.
    for attempt in 1..=TRIES {
        let tok = token();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", &format!("cd '{}' && exec ./applet -c 'sleep 0.02' {tok}", dir_path.display())]);
        let Some(evs) = src.run_and_collect(cmd, 2).await else {
            assert!(attempt < TRIES, "read too late {TRIES} times");
            continue;
        };
        let p = evs[1].process.as_ref().unwrap();
        assert_eq!(args_of(&evs[1]), ["./applet", "-c", "sleep 0.02", tok.as_str()], "argv is kept as given");
        assert_eq!(p.executable.as_deref(), applet.to_str());
        assert_eq!(p.working_directory.as_deref(), dir_path.to_str());
        break;
    }
    src.stop().await;
}

#[tokio::test]
async fn exits_carry_the_exit_code_signal_and_duration() {
    if skip_unless_root("exits_carry_the_exit_code_signal_and_duration") {
        return;
    }
    let mut src = start().await;
    let child = Command::new("/bin/sh").args(["-c", "sleep 0.05; exit 3"]).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let is_exit_of = |pid: u32| {
        move |e: &Event| e.kind == EventKind::ProcessExit && e.process.as_ref().unwrap().pid == Some(pid)
    };
    let ev = src.next_where("process.exit of sh", is_exit_of(pid)).await;
    let p = ev.process.as_ref().unwrap();
    assert_eq!(p.exit_code, Some(3));
    assert_eq!(p.executable.as_deref(), Some("/bin/sh"));
    assert_eq!(p.parent.as_ref().unwrap().pid, Some(std::process::id()));
    assert!(p.start_ticks.is_some());
    let lived = Duration::from_nanos(ev.event.duration.expect("duration"));
    assert!(lived >= Duration::from_millis(50) && lived < WAIT, "{lived:?}");
    assert!(ev.message.is_none());

    let mut sleeper = Command::new("/bin/sleep").arg("10").spawn().unwrap();
    let pid = sleeper.id();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    let ev = src.next_where("process.exit of the killed sleep", is_exit_of(pid)).await;
    assert_eq!(ev.process.as_ref().unwrap().exit_code, Some(128 + 9));
    assert_eq!(ev.message.as_deref(), Some("killed by signal 9"));
    src.stop().await;
}

/// A copy of `/bin/false` in a fresh directory with no symlink on its path: the path execve is
/// given, the path fanotify reports and /proc/PID/exe are then one string, so every
/// `process.start` can be checked for it, read in time or not.
fn short_lived_binary() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::canonicalize(dir.path()).unwrap().join("picket-burst-false");
    std::fs::copy("/bin/false", &real).unwrap();
    let path = real.to_str().unwrap().to_string();
    (dir, path)
}

/// A burst of 2,000 execs of a short-lived program at full speed: every exec has its
/// `process.start` naming the program's path and the shell as parent, and its `process.exit`
/// with exit code 1. What /proc still showed is a matter of scheduling (counted, and at most
/// half may be missed); the path is not: a program gone before /proc was read has it from
/// fanotify, which is asserted whenever fanotify runs (the status says when it does not).
#[tokio::test]
async fn a_burst_of_2000_execs_arrives_with_none_missed() {
    if skip_unless_root("a_burst_of_2000_execs_arrives_with_none_missed") {
        return;
    }
    const N: usize = 2000;
    let (_dir, bin) = short_lived_binary();
    let mut src = start().await;
    let fanotify = !status_of(&src.status).unwrap_or_default().contains("no exec paths");
    let ebpf = status_of(&src.status).unwrap_or_default().contains("exec names from eBPF");
    let tok = token();
    let script = format!("i=0; while [ $i -lt {N} ]; do '{bin}' {tok} $i; i=$((i+1)); done");
    let began = std::time::Instant::now();
    let mut child = Command::new("/bin/sh").args(["-c", &script]).stdout(Stdio::null()).spawn().unwrap();
    let shell = child.id();
    // pid -> (executable, parent pid) of every process.start, whatever its parent.
    let mut starts = std::collections::BTreeMap::new();
    let mut exited = BTreeSet::new();
    let mut by_arg = BTreeSet::new();
    let mut hashed = 0usize;
    let mut wrong = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut finished = None;
    let mut quiet_since = Instant::now();
    loop {
        if finished.is_none()
            && let Some(st) = child.try_wait().unwrap()
        {
            assert!(st.success());
            finished = Some(began.elapsed());
        }
        assert!(Instant::now() < deadline, "only {} starts, {} exits of {N}", starts.len(), exited.len());
        if finished.is_some() && (exited.len() >= N || quiet_since.elapsed() > Duration::from_secs(2)) {
            // Hashed starts may come after their exits: wait until every exit has its start.
            if exited.iter().all(|p| starts.contains_key(p)) || quiet_since.elapsed() > Duration::from_secs(2)
            {
                break;
            }
        }
        let Ok(Some(ev)) = timeout(Duration::from_millis(50), src.rx.recv()).await else { continue };
        quiet_since = Instant::now();
        let p = ev.process.as_ref().unwrap();
        let Some(pid) = p.pid else { continue };
        let ppid = p.parent.as_ref().and_then(|q| q.pid);
        match ev.kind {
            EventKind::ProcessStart => {
                starts.insert(pid, (p.executable.clone(), ppid));
                if ppid != Some(shell) {
                    continue;
                }
                hashed += usize::from(p.hash.is_some());
                let args = args_of(&ev);
                if args.len() == 3 && args[1] == tok {
                    by_arg.insert(args[2].parse::<usize>().unwrap());
                } else if ev.message.is_none() {
                    wrong.push(format!("neither argv nor a message: {p:?}"));
                }
            }
            EventKind::ProcessExit if ppid == Some(shell) => {
                if p.exit_code != Some(1) {
                    wrong.push(format!("exit: {p:?}"));
                }
                exited.insert(pid);
            }
            _ => {}
        }
    }
    let finished = finished.unwrap_or_else(|| {
        child.wait().unwrap();
        began.elapsed()
    });
    let drops = src.drops.snapshot();
    let status = status_of(&src.status);
    let no_path = exited.iter().filter(|p| starts.get(p).is_some_and(|(e, _)| e.is_none())).count();
    eprintln!(
        "burst: {N} execs in {finished:?} ({:.0}/s): {} process.exit; {} read in time, {} without /proc \
         ({no_path} of them without a path); {hashed} hashed; drops {drops:?}; status {status:?}",
        N as f64 / finished.as_secs_f64(),
        exited.len(),
        by_arg.len(),
        exited.len() - by_arg.len().min(exited.len()),
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(drops.get("process.overrun"), None, "no connector message lost");
    assert_eq!(exited.len(), N, "a process.exit naming the shell for every exec");
    for pid in &exited {
        let Some((exe, ppid)) = starts.get(pid) else { panic!("no process.start for {pid}") };
        assert_eq!(*ppid, Some(shell), "parent of {pid}");
        if exe.is_some() || fanotify {
            assert_eq!(exe.as_deref(), Some(bin.as_str()), "executable of {pid}");
        }
    }
    if !fanotify {
        eprintln!("note: fanotify unavailable ({status:?}): {no_path} starts without a path");
    }
    assert!(by_arg.len() * 2 >= N, "only {} of {N} read in time", by_arg.len());
    if ebpf {
        // The tracer's record is there whether or not /proc was read in time.
        assert_eq!(by_arg.len(), N, "every start with its argv from eBPF");
    } else {
        eprintln!("note: no eBPF ({status:?}): argv only where /proc was read in time");
    }
    assert!(hashed > 0, "the program's hash");
    src.stop().await;
}

/// fanotify against the real kernel: a process that runs a `#!` script which execs a program
/// leaves one record group per exec (the script's interpreter and `ld.so` folded in), taken in
/// exec order after the process is long gone.
#[tokio::test]
async fn fanotify_gives_each_exec_its_program_after_the_process_is_gone() {
    if skip_unless_root("fanotify_gives_each_exec_its_program_after_the_process_is_gone") {
        return;
    }
    use picket_capture::process::fanotify::ExecPaths;
    let (dir, bin) = short_lived_binary();
    let script = dir.path().canonicalize().unwrap().join("script.sh");
    std::fs::write(&script, format!("#!/bin/sh\nexec '{bin}' x\n")).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut paths = ExecPaths::open().expect("fanotify as root");
    assert!(paths.marked() > 0);
    let mut child = Command::new(&script).spawn().unwrap();
    let pid = child.id();
    assert_eq!(child.wait().unwrap().code(), Some(1));
    paths.drain();
    let first = paths.take(pid, None).expect("the script's record");
    assert_eq!(first.path, script.to_str().unwrap());
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    assert_eq!(first.running, sh.to_str().unwrap(), "a script runs its interpreter");
    assert!(first.key.is_some() && first.fd.is_some());
    let second = paths.take(pid, Some(bin.as_str())).expect("the program's record, matching /proc");
    assert_eq!(second.path, bin);
    assert!(paths.take(pid, None).is_none(), "interpreters are not execs");
    assert_eq!(paths.counts.confirmed, 1);
    // A record that does not match what /proc shows is left in place; a live script is matched
    // by its interpreter, which is what /proc/PID/exe shows.
    let mut child = Command::new(&bin).spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    paths.drain();
    assert!(paths.take(pid, Some("/usr/bin/other")).is_none());
    assert_eq!(paths.counts.mismatched, 1);
    assert_eq!(paths.take(pid, None).map(|f| f.path), Some(bin.clone()));
    let mut child = Command::new(&script).spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    paths.drain();
    let f = paths.take(pid, Some(sh.to_str().unwrap())).expect("the script, by its interpreter");
    assert_eq!(f.path, script.to_str().unwrap());
    assert_eq!(paths.take(pid, None).map(|f| f.path), Some(bin.clone()));
    // A group older than the one /proc names (as a failed exec leaves) is dropped on the way.
    let mut child = Command::new(&script).spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    paths.drain();
    let expired = paths.counts.expired;
    let f = paths.take(pid, Some(bin.as_str())).expect("the program, past the script");
    assert_eq!(f.path, bin);
    assert_eq!(paths.counts.expired, expired + 1);
    assert!(paths.take(pid, None).is_none());
}

/// A process gone before /proc is read, end to end but for the connector (whose messages are
/// made here, after the process is gone, so /proc is sure to be empty): the real /proc reader and
/// the real fanotify group give its `process.start` the program's path, and the fd fanotify kept
/// gives its hash.
/// The connector's messages for a child of `parent` that exec'd and exited with code 1.
fn fork_exec_exit(parent: u32, pid: u32) -> [picket_capture::process::netlink::Message; 3] {
    use picket_capture::process::netlink::{ConnEvent, Message};
    [
        Message {
            cpu: 0,
            seq: 0,
            timestamp_ns: 1,
            event: ConnEvent::Fork { parent_tgid: parent, child_pid: pid, child_tgid: pid },
        },
        Message { cpu: 0, seq: 1, timestamp_ns: 2, event: ConnEvent::Exec { pid, tgid: pid } },
        Message {
            cpu: 0,
            seq: 2,
            timestamp_ns: 3,
            event: ConnEvent::Exit { pid, tgid: pid, exit_code: 1 << 8, parent_tgid: Some(parent) },
        },
    ]
}

#[tokio::test]
async fn an_exec_gone_before_proc_is_read_gets_its_path_and_hash_from_fanotify() {
    if skip_unless_root("an_exec_gone_before_proc_is_read_gets_its_path_and_hash_from_fanotify") {
        return;
    }
    use picket_capture::process::fanotify::ExecPaths;
    use picket_capture::process::procfs::ProcReader;
    use picket_capture::process::{Opener, Tracker, cache::ProcCache};
    let (_dir, bin) = short_lived_binary();
    let mut paths = ExecPaths::open().expect("fanotify as root");
    let mut child = Command::new(&bin).spawn().unwrap();
    let pid = child.id();
    assert_eq!(child.wait().unwrap().code(), Some(1));
    paths.drain();
    let me = std::process::id();
    let batch = fork_exec_exit(me, pid);
    let mut tracker = Tracker::new(ProcCache::default(), 0);
    let mut fs = ProcReader::default();
    let mut out = Vec::new();
    let counts =
        tracker.handle_batch(&batch, &mut fs, &mut paths, 0, &mut |ev, program| out.push((ev, program)));
    assert_eq!((counts.vanished, counts.vanished_with_path), (1, 1));
    let (start, program) = &mut out[0];
    let p = start.process.as_ref().unwrap();
    assert_eq!(p.executable.as_deref(), Some(bin.as_str()));
    assert_eq!(p.resolved_executable.as_deref(), Some(bin.as_str()));
    assert_eq!(p.parent.as_ref().unwrap().pid, Some(me));
    assert!(start.message.as_deref().unwrap().contains("from fanotify"), "{:?}", start.message);
    // The fd fanotify kept still reads the program, though the process is gone.
    let program = program.take().expect("the program to hash");
    assert_eq!(program.key.size, std::fs::metadata(&bin).unwrap().len());
    let Opener::Fd(fd) = program.open else { panic!("fanotify's fd, not /proc") };
    let sum =
        picket_capture::process::hash::sha256_file(&mut std::fs::File::from(fd), 1 << 30).unwrap().unwrap();
    let want = Command::new("sha256sum").arg(&bin).output().unwrap();
    assert!(String::from_utf8_lossy(&want.stdout).starts_with(&picket_capture::process::hash::hex(&sum)));
    // The exit names the program too.
    let exit = out[1].0.process.as_ref().unwrap();
    assert_eq!((exit.executable.as_deref(), exit.exit_code), (Some(bin.as_str()), Some(1)));
}

/// The eBPF tracer against the real kernel: a BusyBox-style applet (a symlink) that is gone
/// long before its messages are handled still gets the path it was started by (not the file the
/// link points to, which is all fanotify knows) and its full argv.
#[tokio::test]
async fn an_exec_gone_before_proc_is_read_gets_its_path_and_argv_from_ebpf() {
    if skip_unless_root("an_exec_gone_before_proc_is_read_gets_its_path_and_argv_from_ebpf") {
        return;
    }
    use picket_capture::process::bpf::ExecNames;
    use picket_capture::process::procfs::ProcReader;
    use picket_capture::process::{Execs, Tracker, cache::ProcCache};
    let mut names = match ExecNames::open() {
        Ok(n) => n,
        Err(why) => {
            assert!(
                std::env::var_os("PICKET_REQUIRE_EBPF").is_none(),
                "PICKET_REQUIRE_EBPF is set and eBPF is unavailable: {why}"
            );
            eprintln!("\n!!!!!!!! SKIPPED (eBPF unavailable: {why}) !!!!!!!!\n");
            return;
        }
    };
    let (dir, bin) = short_lived_binary();
    let applet = std::fs::canonicalize(dir.path()).unwrap().join("nc");
    std::os::unix::fs::symlink(&bin, &applet).unwrap();
    let applet = applet.to_str().unwrap().to_string();
    let mut child = Command::new(&applet).args(["-l", "-p", "4444"]).spawn().unwrap();
    let pid = child.id();
    assert_eq!(child.wait().unwrap().code(), Some(1));
    names.drain();
    let me = std::process::id();
    let batch = fork_exec_exit(me, pid);
    let mut execs = Execs { paths: None, names: Some(names) };
    let mut tracker = Tracker::new(ProcCache::default(), 0);
    let mut fs = ProcReader::default();
    let mut out = Vec::new();
    let counts = tracker.handle_batch(&batch, &mut fs, &mut execs, 0, &mut |ev, _| out.push(ev));
    assert_eq!((counts.vanished, counts.vanished_with_path), (1, 1));
    let p = out[0].process.as_ref().unwrap();
    assert_eq!(p.executable.as_deref(), Some(applet.as_str()), "the link, as started");
    assert_eq!(p.name.as_deref(), Some("nc"));
    assert_eq!(args_of(&out[0]), [applet.as_str(), "-l", "-p", "4444"]);
    assert_eq!(p.command_line.as_deref(), Some(format!("{applet} -l -p 4444").as_str()));
    assert!(out[0].message.as_deref().unwrap().contains("from eBPF"), "{:?}", out[0].message);
    // The exit knows it by the same name.
    let exit = out[1].process.as_ref().unwrap();
    assert_eq!((exit.executable.as_deref(), exit.exit_code), (Some(applet.as_str()), Some(1)));
    assert_eq!(execs.names.as_ref().unwrap().counts().used, 1);
}

/// A program under /dev/shm, one run from a file deleted before its exec (through
/// /proc/self/fd) and one from a memfd are reported as fileless, with the reason; their hash is
/// the file's (read through the fd, for the two that have no path any more).
#[tokio::test]
async fn fileless_programs_are_flagged_and_programs_hashed() {
    if skip_unless_root("fileless_programs_are_flagged_and_programs_hashed") {
        return;
    }
    let mut src = start().await;
    let sha = |path: &str| {
        let out = Command::new("sha256sum").arg(path).output().unwrap();
        String::from_utf8_lossy(&out.stdout).split(' ').next().unwrap().to_string()
    };
    let sleep_sum = sha("/bin/sleep");
    // A program under /dev/shm.
    let shm = format!("/dev/shm/picket-test-{}", std::process::id());
    std::fs::copy("/bin/sleep", &shm).unwrap();
    let mut child = Command::new(&shm).arg("0.3").spawn().unwrap();
    let pid = child.id();
    let ev = src
        .next_where("process.start", |e| {
            e.kind == EventKind::ProcessStart && e.process.as_ref().unwrap().pid == Some(pid)
        })
        .await;
    child.wait().unwrap();
    let _ = std::fs::remove_file(&shm);
    let p = ev.process.as_ref().unwrap();
    assert_eq!(p.executable.as_deref(), Some(shm.as_str()));
    assert_eq!(p.hash.as_ref().map(|h| h.sha256.as_str()), Some(sleep_sum.as_str()), "{p:?}");
    assert_eq!((p.fileless, p.fileless_reason.as_deref()), (Some(true), Some("dev_shm")), "{p:?}");
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("SKIP (deleted and memfd parts): no /usr/bin/python3");
        src.stop().await;
        return;
    }
    // A file deleted before its exec: opened, unlinked, then run through /proc/self/fd.
    let dir = tempfile::tempdir().unwrap();
    let del = std::fs::canonicalize(dir.path()).unwrap().join("deleted-sleep");
    std::fs::copy("/bin/sleep", &del).unwrap();
    let code = format!(
        "import os\nfd=os.open('{}',os.O_RDONLY)\nos.unlink('{}')\nos.execv('/proc/self/fd/%d'%fd,['deleted-sleep','0.3'])",
        del.display(),
        del.display()
    );
    let mut child = Command::new("/usr/bin/python3").args(["-c", &code]).spawn().unwrap();
    let pid = child.id();
    let ev = src
        .next_where("process.start of the deleted file", |e| {
            e.kind == EventKind::ProcessStart
                && e.process.as_ref().is_some_and(|p| p.pid == Some(pid))
                && args_of(e).first().map(String::as_str) == Some("deleted-sleep")
        })
        .await;
    child.wait().unwrap();
    let p = ev.process.as_ref().unwrap();
    assert_eq!(
        p.resolved_executable.as_deref(),
        Some(format!("{} (deleted)", del.display()).as_str()),
        "{p:?}"
    );
    assert_eq!((p.fileless, p.fileless_reason.as_deref()), (Some(true), Some("deleted")), "{p:?}");
    assert_eq!(p.hash.as_ref().map(|h| h.sha256.as_str()), Some(sleep_sum.as_str()), "{p:?}");
    // A memfd, run through /proc/self/fd (what fexecve does).
    {
        let code = "import os\nfd=os.memfd_create('picket-memfd',0)\nos.write(fd,open('/bin/sleep','rb').read())\n\
                    os.execv('/proc/self/fd/%d'%fd,['memfd-sleep','0.3'])";
        let mut child = Command::new("/usr/bin/python3").args(["-c", code]).spawn().unwrap();
        let pid = child.id();
        // python3's own exec first, then the memfd's.
        let ev = src
            .next_where("process.start of the memfd", |e| {
                e.kind == EventKind::ProcessStart
                    && e.process
                        .as_ref()
                        .is_some_and(|p| p.pid == Some(pid) && p.name.as_deref() != Some("python3"))
                    && args_of(e).first().map(String::as_str) == Some("memfd-sleep")
            })
            .await;
        child.wait().unwrap();
        let p = ev.process.as_ref().unwrap();
        assert!(p.resolved_executable.as_deref().unwrap().starts_with("/memfd:picket-memfd"), "{p:?}");
        assert_eq!((p.fileless, p.fileless_reason.as_deref()), (Some(true), Some("memfd")), "{p:?}");
        assert_eq!(p.hash.as_ref().map(|h| h.sha256.as_str()), Some(sleep_sum.as_str()), "{p:?}");
    }
    src.stop().await;
}

/// Run the source in a child process made by `wrapper` (a netns, no privileges) and return the
/// status it reports. The child is this test binary, running `child_test` with `ENV` set.
const ENV: &str = "PICKET_PROCESS_STATUS_CHILD";

async fn status_from_child(wrapper: &[&str], child_test: &str) -> String {
    let me = std::env::current_exe().unwrap();
    let out = Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(me)
        .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
        .env(ENV, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    text.lines()
        .find_map(|l| l.split_once("PROCESS_STATUS=").map(|(_, s)| s))
        .unwrap_or_else(|| panic!("no status line in {text}"))
        .to_string()
}

/// In the child: start the source, print the status it settles on, check that it stopped by
/// itself (the agent would go on).
#[tokio::test]
async fn child_reports_status() {
    if std::env::var_os(ENV).is_none() {
        return;
    }
    let (tx, _rx) = mpsc::channel(16);
    let status = SourceStatus::default();
    let (_trigger, shutdown) = shutdown_pair();
    let out = EventTx::new(ProcessSource::NAME, tx, Drops::default());
    let r = timeout(WAIT, ProcessSource::new().run(out, status.clone(), shutdown)).await;
    println!("PROCESS_STATUS={}", status_of(&status).unwrap_or_default());
    assert!(matches!(r, Ok(Ok(()))), "the source returns Ok at once when unavailable: {r:?}");
}

#[tokio::test]
async fn unavailable_outside_the_initial_network_namespace_or_without_privileges() {
    if skip_unless_root("unavailable_outside_the_initial_network_namespace_or_without_privileges") {
        return;
    }
    let s = status_from_child(&["unshare", "--net"], "child_reports_status").await;
    assert!(s.starts_with("unavailable: ") && s.contains("initial network namespace"), "{s}");
    let s = status_from_child(
        &["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"],
        "child_reports_status",
    )
    .await;
    assert!(s.starts_with("unavailable: ") && s.contains("CAP_NET_ADMIN"), "{s}");
}

const POLL_ENV: &str = "PICKET_PROCESS_POLL_CHILD";

/// In the child: with a poll interval, the source falls back to polling /proc, says so in its
/// status, and reports a process it did not start itself (its start, then its exit without an
/// exit code), marked `event.module = "poll"`.
#[tokio::test]
async fn child_polls() {
    if std::env::var_os(POLL_ENV).is_none() {
        return;
    }
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let status = SourceStatus::default();
    let (trigger, shutdown) = shutdown_pair();
    let out = EventTx::new(ProcessSource::NAME, tx, Drops::default());
    let src = ProcessSource::new().with_poll_interval(Some(Duration::from_millis(200)));
    let task = tokio::spawn(src.run(out, status.clone(), shutdown));
    let deadline = Instant::now() + WAIT;
    while !status_of(&status).is_some_and(|s| s.starts_with("running")) {
        assert!(Instant::now() < deadline, "{:?}", status_of(&status));
        sleep(Duration::from_millis(10)).await;
    }
    println!("PROCESS_STATUS={}", status_of(&status).unwrap_or_default());
    // sleep adds its arguments up: a second one only to see argv in full.
    let mut child = Command::new("/bin/sleep").args(["0.7", "0"]).spawn().unwrap();
    let pid = child.id();
    let mut start = None;
    let mut exit = None;
    let deadline = Instant::now() + WAIT;
    while exit.is_none() {
        assert!(Instant::now() < deadline, "start {start:?}, no exit");
        // Reaped once it ends, so the next scan sees it gone.
        let _ = child.try_wait().unwrap();
        let Ok(Some(ev)) = timeout(Duration::from_millis(100), rx.recv()).await else { continue };
        if ev.process.as_ref().and_then(|p| p.pid) != Some(pid) {
            continue;
        }
        match ev.kind {
            EventKind::ProcessStart => start = Some(ev),
            EventKind::ProcessExit => exit = Some(ev),
            _ => {}
        }
    }
    child.wait().unwrap();
    let start = start.expect("process.start before the exit");
    assert_eq!(start.event.module.as_deref(), Some("poll"));
    assert_eq!(args_of(&start), ["/bin/sleep", "0.7", "0"]);
    let p = start.process.as_ref().unwrap();
    assert_eq!(p.executable.as_deref(), Some("/bin/sleep"), "{p:?}");
    assert_eq!(p.parent.as_ref().unwrap().pid, Some(std::process::id()));
    let age = std::time::SystemTime::now().duration_since(start.timestamp.to_system_time()).unwrap();
    assert!(age < WAIT, "the process's own start time: {age:?}");
    let exit = exit.unwrap();
    assert_eq!(exit.event.module.as_deref(), Some("poll"));
    assert_eq!(exit.process.as_ref().unwrap().exit_code, None);
    assert_eq!(exit.process.as_ref().unwrap().executable.as_deref(), Some("/bin/sleep"));
    trigger.trigger();
    timeout(WAIT, task).await.unwrap().unwrap().unwrap();
    println!("POLL_OK");
}

#[tokio::test]
async fn polls_proc_outside_the_initial_network_namespace_and_without_privileges() {
    if skip_unless_root("polls_proc_outside_the_initial_network_namespace_and_without_privileges") {
        return;
    }
    let unpriv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"];
    for wrapper in [&["unshare", "--net"][..], &unpriv[..]] {
        let me = std::env::current_exe().unwrap();
        let out = Command::new(wrapper[0])
            .args(&wrapper[1..])
            .arg(me)
            .args(["--exact", "child_polls", "--nocapture", "--test-threads=1"])
            .env(POLL_ENV, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("POLL_OK"), "{wrapper:?}: {text}");
        let status = text.lines().find_map(|l| l.split_once("PROCESS_STATUS=").map(|(_, s)| s)).unwrap();
        assert!(status.starts_with("running (degraded: polling /proc every 0.2s ("), "{status}");
    }
}

impl Running {
    /// Every event of `pid` (`process.pid`) up to and including its `process.exit`.
    async fn events_until_exit(&mut self, pid: u32) -> Vec<Event> {
        let mut evs = Vec::new();
        loop {
            let of_pid = |e: &Event| e.process.as_ref().is_some_and(|p| p.pid == Some(pid));
            let ev = self.next_where("an event of our child", of_pid).await;
            let exit = ev.kind == EventKind::ProcessExit;
            evs.push(ev);
            if exit {
                return evs;
            }
        }
    }
}

/// (effective, real, previous) uid, then the same for gids, of a `process.setid`.
fn setid_ids(ev: &Event) -> [Option<String>; 6] {
    let p = ev.process.as_ref().unwrap();
    let u = |u: Option<&picket_event::User>| u.and_then(|u| u.id.clone());
    let g = |g: Option<&picket_event::Group>| g.and_then(|g| g.id.clone());
    [
        u(p.user.as_ref()),
        u(p.real_user.as_ref()),
        u(p.previous_user.as_ref()),
        g(p.group.as_ref()),
        g(p.real_group.as_ref()),
        g(p.previous_group.as_ref()),
    ]
}

fn ids(v: [&str; 6]) -> [Option<String>; 6] {
    v.map(|s| Some(s.to_string()))
}

/// Root drops to nobody with setpriv (setresuid, setresgid, then exec): two
/// `process.setid` events naming setpriv, with the ids before and after; the program it then
/// runs and its exit carry the new user.
#[tokio::test]
async fn dropping_privileges_is_reported_with_the_ids_before_and_after() {
    if skip_unless_root("dropping_privileges_is_reported_with_the_ids_before_and_after") {
        return;
    }
    let Ok(setpriv) = which("setpriv") else {
        eprintln!("\n!!!!!!!! SKIPPED (needs setpriv from util-linux) !!!!!!!!\n");
        return;
    };
    let mut src = start().await;
    let child = Command::new(&setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sleep", "0.2"])
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait_with_output().unwrap().status.success());
    let evs = src.events_until_exit(pid).await;
    let setids: Vec<&Event> = evs.iter().filter(|e| e.kind == EventKind::ProcessSetid).collect();
    assert_eq!(setids.len(), 2, "{evs:#?}");
    // setpriv sets the uid first (keeping its capabilities), then the gid.
    let by_action = |a: &str| *setids.iter().find(|e| e.event.action.as_deref() == Some(a)).unwrap();
    let (uid, gid) = (by_action("uid_change"), by_action("gid_change"));
    assert_eq!(setid_ids(uid)[..3], ids(["65534", "65534", "0", "", "", ""])[..3], "{uid:#?}");
    assert_eq!(setid_ids(gid)[3..], ids(["", "", "", "65534", "65534", "0"])[3..], "{gid:#?}");
    assert_eq!(uid.user.as_ref().unwrap().id.as_deref(), Some("65534"));
    for ev in [gid, uid] {
        let p = ev.process.as_ref().unwrap();
        assert_eq!(p.executable.as_deref(), Some(setpriv.as_str()), "{ev:#?}");
        assert_eq!(p.parent.as_ref().unwrap().pid, Some(std::process::id()));
        assert!(p.start_ticks.is_some());
        assert_eq!(ev.event.module.as_deref(), Some("netlink"));
    }
    // The kernel's order: the changes, then the exec of sleep (as nobody), then the exit.
    let start = evs
        .iter()
        .find(|e| {
            e.kind == EventKind::ProcessStart
                && e.process.as_ref().unwrap().executable.as_deref() == Some("/bin/sleep")
        })
        .expect("start of sleep");
    assert_eq!(start.user.as_ref().unwrap().id.as_deref(), Some("65534"));
    let exit = evs.last().unwrap();
    assert_eq!(exit.user.as_ref().unwrap().id.as_deref(), Some("65534"), "the table has the new user");
    src.stop().await;
}

/// A setuid-root copy of `id` the test made, removed on drop (also when the test fails).
struct SetuidCopy {
    dir: tempfile::TempDir,
    path: String,
}

impl Drop for SetuidCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(self.dir.path());
    }
}

/// `id` copied into a fresh directory under the target dir, owned by root, mode 4755; `Err`
/// with why when it cannot run setuid there (a nosuid mount, a directory nobody cannot enter).
fn setuid_copy_of_id() -> Result<SetuidCopy, String> {
    use std::os::unix::fs::PermissionsExt;
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let vfs = rustix::fs::statvfs(base).map_err(|e| format!("statvfs {}: {e}", base.display()))?;
    if vfs.f_flag.contains(rustix::fs::StatVfsMountFlags::NOSUID) {
        return Err(format!("{} is on a nosuid mount", base.display()));
    }
    let dir = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let real = std::fs::canonicalize(dir.path()).map_err(|e| e.to_string())?;
    let path = real.join("picket-setuid-id").to_str().ok_or("path is not UTF-8")?.to_string();
    let copy = SetuidCopy { dir, path };
    std::fs::set_permissions(copy.dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    std::fs::copy("/usr/bin/id", &copy.path).map_err(|e| format!("copying /usr/bin/id: {e}"))?;
    std::os::unix::fs::chown(&copy.path, Some(0), Some(0)).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&copy.path, std::fs::Permissions::from_mode(0o4755))
        .map_err(|e| e.to_string())?;
    // Every directory up to it must let nobody through.
    let mut d = real.as_path();
    while let Some(parent) = d.parent() {
        let mode = std::fs::metadata(d).map_err(|e| e.to_string())?.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(format!("{} is not searchable by others", d.display()));
        }
        d = parent;
    }
    Ok(copy)
}

fn which(prog: &str) -> Result<String, ()> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| format!("{d}/{prog}"))
        .find(|p| std::path::Path::new(p).exists())
        .ok_or(())
}

/// nobody runs a setuid-root program (a copy of `id` the test made): a `process.setid` with
/// effective uid 0, real uid 65534 and previous uid 65534, naming the setuid program (the kernel
/// sends the change before the exec; the source waits for the exec to name it).
#[tokio::test]
async fn running_a_setuid_program_is_reported_as_becoming_root() {
    if skip_unless_root("running_a_setuid_program_is_reported_as_becoming_root") {
        return;
    }
    let Ok(setpriv) = which("setpriv") else {
        eprintln!("\n!!!!!!!! SKIPPED (needs setpriv from util-linux) !!!!!!!!\n");
        return;
    };
    let copy = match setuid_copy_of_id() {
        Ok(c) => c,
        Err(why) => {
            eprintln!("\n!!!!!!!! SKIPPED (no setuid copy of id: {why}) !!!!!!!!\n");
            return;
        }
    };
    let mut src = start().await;
    let child = Command::new(&setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", &copy.path, "-u"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "the copy runs setuid root");
    let evs = src.events_until_exit(pid).await;
    let root = evs
        .iter()
        .find(|e| e.kind == EventKind::ProcessSetid && setid_ids(e)[0].as_deref() == Some("0"))
        .unwrap_or_else(|| panic!("no change to euid 0: {evs:#?}"));
    assert_eq!(root.event.action.as_deref(), Some("uid_change"));
    assert_eq!(setid_ids(root)[..3], ids(["0", "65534", "65534", "", "", ""])[..3]);
    assert_eq!(setid_ids(root)[3..5], ids(["65534", "65534", "", "", "", ""])[..2], "groups unchanged");
    assert_eq!(root.user.as_ref().unwrap().id.as_deref(), Some("0"));
    assert_eq!(root.user.as_ref().unwrap().name.as_deref(), Some("root"));
    let p = root.process.as_ref().unwrap();
    assert_eq!(
        p.executable.as_deref(),
        Some(copy.path.as_str()),
        "the setuid program, not setpriv: {root:#?}"
    );
    assert_eq!(p.parent.as_ref().unwrap().pid, Some(std::process::id()));
    // It comes after the start of the program it ran.
    let root_at = evs.iter().position(|e| std::ptr::eq(e, root));
    let start_at = evs.iter().position(|e| {
        e.kind == EventKind::ProcessStart
            && e.process.as_ref().unwrap().executable.as_deref() == Some(copy.path.as_str())
    });
    assert!(start_at.is_some() && start_at < root_at, "{evs:#?}");
    drop(copy);
    src.stop().await;
}
