//! Host containment for real, on things these tests create only (PRODUCT.md, "Safety when testing
//! containment"): processes they spawned, files they wrote, users they added, fanotify marks on a
//! tmpfs they mounted. Needs root; without it each test says SKIPPED loudly and passes.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// True when the test may run; otherwise prints the loud skip line.
fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("SKIPPED (needs root): {test}");
    false
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// A child that is killed and reaped whatever happens to the test.
struct Spawned(Child);

impl Spawned {
    fn new(cmd: &mut Command) -> Spawned {
        Spawned(cmd.stdin(Stdio::null()).spawn().expect("spawn test process"))
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).unwrap()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pids whose parent is `pid`, recursively (a /proc walk of our own test's tree).
fn descendants(pid: i32) -> Vec<i32> {
    let links: Vec<(i32, i32)> = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| Some((p, picket_contain::host::process_info(p)?.ppid)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (child, _) in links.iter().filter(|(_, pp)| *pp == parent) {
            out.push(*child);
            frontier.push(*child);
        }
    }
    out
}

/// Gone, or a zombie, or the pid now names a younger process.
fn ended(pid: i32, start_time: u64) -> bool {
    match picket_contain::host::process_info(pid) {
        None => true,
        Some(info) => info.start_time != start_time || info.state == 'Z',
    }
}

mod kill {
    use super::*;
    use picket_contain::host::{HostError, Refusal, kill, kill_refusal, process_info};

    #[test]
    fn kill_refuses_a_pid_whose_start_time_changed() {
        if !require_root("kill_refuses_a_pid_whose_start_time_changed") {
            return;
        }
        let mut child = Spawned::new(Command::new("sleep").arg("30"));
        let info = process_info(child.pid()).unwrap();
        let err = kill(child.pid(), info.start_time + 1, false, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, HostError::StartTimeMismatch { pid, .. } if pid == child.pid()), "{err}");
        assert!(child.0.try_wait().unwrap().is_none(), "a refused kill must not signal");

        let outcome = kill(child.pid(), info.start_time, false, Duration::from_secs(5)).unwrap();
        assert_eq!(outcome.ended_by_term, vec![child.pid()]);
        let status = child.wait_exit(Duration::from_secs(5)).unwrap();
        assert_eq!(status.signal(), Some(libc_sig::TERM));
    }

    #[test]
    fn kill_ends_a_cooperative_process_with_sigterm_well_before_the_grace_period() {
        if !require_root("kill_ends_a_cooperative_process_with_sigterm_well_before_the_grace_period") {
            return;
        }
        let mut child = Spawned::new(Command::new("sleep").arg("30"));
        let info = process_info(child.pid()).unwrap();
        let start = Instant::now();
        let outcome = kill(child.pid(), info.start_time, false, Duration::from_secs(10)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5), "waited the whole grace: {:?}", start.elapsed());
        assert_eq!(outcome.ended_by_term, vec![child.pid()]);
        assert!(outcome.ended_by_kill.is_empty());
        assert_eq!(child.wait_exit(Duration::from_secs(5)).unwrap().signal(), Some(libc_sig::TERM));
    }

    #[test]
    fn term_then_kill_after_grace_for_a_process_ignoring_sigterm() {
        if !require_root("term_then_kill_after_grace_for_a_process_ignoring_sigterm") {
            return;
        }
        let mut child = Spawned::new(Command::new("sh").args(["-c", "trap '' TERM; sleep 30; :"]));
        let pid = child.pid();
        // The trap is set once sh has started `sleep`.
        assert!(wait_until(Duration::from_secs(5), || !descendants(pid).is_empty()));
        let info = process_info(pid).unwrap();
        let grace = Duration::from_millis(500);
        let start = Instant::now();
        let outcome = kill(pid, info.start_time, true, grace).unwrap();
        let took = start.elapsed();
        assert!(took >= grace, "SIGKILL came before the grace period: {took:?}");
        assert!(took < grace + Duration::from_secs(3), "{took:?}");
        assert!(outcome.ended_by_kill.contains(&pid), "{outcome:?}");
        assert!(outcome.still_alive.is_empty(), "{outcome:?}");
        assert_eq!(child.wait_exit(Duration::from_secs(5)).unwrap().signal(), Some(libc_sig::KILL));
    }

    #[test]
    fn kill_tree_ends_children_then_parent() {
        if !require_root("kill_tree_ends_children_then_parent") {
            return;
        }
        // root sh -> two sleeps and a subshell -> a grandchild sleep.
        let mut child =
            Spawned::new(Command::new("sh").args(["-c", "sleep 30 & sleep 30 & (sleep 30 & wait) & wait"]));
        let pid = child.pid();
        assert!(wait_until(Duration::from_secs(5), || descendants(pid).len() >= 4), "tree did not grow");
        let tree: Vec<(i32, u64, i32)> = descendants(pid)
            .into_iter()
            .filter_map(|p| process_info(p).map(|i| (p, i.start_time, i.ppid)))
            .collect();
        let info = process_info(pid).unwrap();

        let outcome = kill(pid, info.start_time, true, Duration::from_secs(5)).unwrap();

        assert_eq!(outcome.signalled.last(), Some(&pid), "root must be signalled last: {outcome:?}");
        let position = |p: i32| outcome.signalled.iter().position(|x| *x == p);
        for (p, _, ppid) in &tree {
            let (Some(me), Some(parent)) = (position(*p), position(*ppid)) else {
                panic!("{p} or its parent {ppid} not signalled: {outcome:?}")
            };
            assert!(me < parent, "child {p} signalled after its parent {ppid}: {outcome:?}");
        }
        assert!(child.wait_exit(Duration::from_secs(5)).is_some());
        for (p, start, _) in &tree {
            assert!(wait_until(Duration::from_secs(2), || ended(*p, *start)), "descendant {p} survived");
        }
        assert!(outcome.still_alive.is_empty());
    }

    #[test]
    fn kill_refuses_its_own_process() {
        let me = i32::try_from(std::process::id()).unwrap();
        let info = process_info(me).unwrap();
        let err = kill(me, info.start_time, true, Duration::ZERO).unwrap_err();
        assert!(matches!(err, HostError::RefusedProcess { reason: Refusal::OwnProcess, .. }), "{err}");
    }

    #[test]
    fn init_ancestors_and_kernel_threads_are_refused() {
        // Only the pure check: these targets are never handed to kill() by a test.
        assert_eq!(kill_refusal(1), Some(Refusal::Init));
        assert_eq!(kill_refusal(0), Some(Refusal::Init));
        let me = i32::try_from(std::process::id()).unwrap();
        let parent = process_info(me).unwrap().ppid;
        if parent > 1 {
            assert_eq!(kill_refusal(parent), Some(Refusal::OwnAncestor));
        }
        let kthread = fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|p| process_info(*p).is_some_and(|i| i.is_kernel_thread));
        match kthread {
            Some(k) => {
                assert_eq!(kill_refusal(k), Some(Refusal::KernelThread));
                assert!(process_info(k).unwrap().exe.is_none());
            }
            None => eprintln!("SKIPPED (no kernel thread visible): kernel thread refusal"),
        }
    }

    #[test]
    fn kill_of_an_exited_process_reports_it_gone() {
        if !require_root("kill_of_an_exited_process_reports_it_gone") {
            return;
        }
        let mut child = Spawned::new(Command::new("sleep").arg("30"));
        let pid = child.pid();
        let info = process_info(pid).unwrap();
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let err = kill(pid, info.start_time, false, Duration::ZERO).unwrap_err();
        assert!(
            matches!(err, HostError::NoSuchProcess { .. } | HostError::StartTimeMismatch { .. }),
            "{err}"
        );
    }

    /// Signal numbers, without a libc dependency.
    pub mod libc_sig {
        pub const KILL: i32 = 9;
        pub const TERM: i32 = 15;
    }
}

/// A tmpfs this test mounted on a temp dir; unmounted on drop.
struct TestTmpfs {
    dir: tempfile::TempDir,
}

impl TestTmpfs {
    fn mount() -> Option<TestTmpfs> {
        let dir = tempfile::Builder::new().prefix("picket-test-mnt-").tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m,mode=0755", "picket-test"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED (cannot mount a tmpfs): {}", dir.path().display());
            return None;
        }
        let mounted = TestTmpfs { dir };
        // Never mark anything but the tmpfs we just mounted.
        let st = rustix::fs::statfs(mounted.path()).ok()?;
        let parent_dev = fs::metadata(mounted.path().parent()?).ok()?.dev();
        let own_dev = fs::metadata(mounted.path()).ok()?.dev();
        assert_eq!(st.f_type, 0x0102_1994, "not a tmpfs at {}", mounted.path().display());
        assert_ne!(parent_dev, own_dev, "tmpfs not mounted at {}", mounted.path().display());
        Some(mounted)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestTmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(self.dir.path()).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

mod quarantine {
    use super::*;
    use picket_contain::host::{HostError, list_quarantine, quarantine, restore};
    use sha2::{Digest, Sha256};

    fn sha256_hex(bytes: &[u8]) -> String {
        Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn write_payload(dir: &Path, name: &str, mode: u32) -> (PathBuf, Vec<u8>) {
        let path = dir.join(name);
        let content = format!("#!/bin/sh\necho {name} written by the picket test\n").into_bytes();
        fs::write(&path, &content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        (path, content)
    }

    #[test]
    fn quarantine_strips_exec_bits_and_restore_puts_back_owner_and_mode() {
        if !require_root("quarantine_strips_exec_bits_and_restore_puts_back_owner_and_mode") {
            return;
        }
        let work = tempfile::tempdir().unwrap();
        let qdir = work.path().join("quarantine");
        let (path, content) = write_payload(work.path(), "payload.sh", 0o755);
        std::os::unix::fs::chown(&path, Some(12345), Some(23456)).unwrap();
        // chown clears setuid, so set it after.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o4755)).unwrap();
        let before = fs::metadata(&path).unwrap();

        let record = quarantine(&path, &qdir).unwrap();

        assert!(fs::symlink_metadata(&path).is_err(), "original still there");
        assert_eq!(record.original_path, path);
        assert_eq!((record.uid, record.gid, record.mode), (12345, 23456, 0o4755));
        assert_eq!(record.size, content.len() as u64);
        assert_eq!(record.sha256, sha256_hex(&content));
        assert!(!record.cross_filesystem);
        assert_eq!(fs::metadata(&qdir).unwrap().mode() & 0o7777, 0o700);
        let stored = fs::metadata(qdir.join(&record.id)).unwrap();
        assert_eq!(stored.mode() & 0o7111, 0, "exec/setuid bits left: {:o}", stored.mode());
        let sidecar: serde_json::Value =
            serde_json::from_slice(&fs::read(qdir.join(format!("{}.json", record.id))).unwrap()).unwrap();
        assert_eq!(sidecar["original_path"], path.to_str().unwrap());
        assert_eq!(sidecar["sha256"], record.sha256.as_str());
        assert_eq!(list_quarantine(&qdir).unwrap().records, vec![record.clone()]);

        let restored = restore(&record.id, &qdir).unwrap();

        assert_eq!(restored, record);
        let after = fs::metadata(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), content);
        assert_eq!((after.uid(), after.gid(), after.mode() & 0o7777), (12345, 23456, 0o4755));
        assert_eq!((after.mtime(), after.mtime_nsec()), (before.mtime(), before.mtime_nsec()));
        assert!(list_quarantine(&qdir).unwrap().records.is_empty());
        assert!(!qdir.join(&record.id).exists());
    }

    #[test]
    fn quarantine_across_filesystems_copies_fsyncs_and_unlinks_and_restores_back() {
        if !require_root("quarantine_across_filesystems_copies_fsyncs_and_unlinks_and_restores_back") {
            return;
        }
        let Some(tmpfs) = TestTmpfs::mount() else { return };
        let work = tempfile::tempdir().unwrap();
        if fs::metadata(work.path()).unwrap().dev() == fs::metadata(tmpfs.path()).unwrap().dev() {
            eprintln!("SKIPPED (temp dir on the test tmpfs?): cross-filesystem quarantine");
            return;
        }
        let (path, content) = write_payload(work.path(), "dropper", 0o750);
        let before = fs::metadata(&path).unwrap();
        let qdir = tmpfs.path().join("q");

        let record = quarantine(&path, &qdir).unwrap();

        assert!(record.cross_filesystem);
        assert!(fs::symlink_metadata(&path).is_err());
        assert_eq!(fs::read(qdir.join(&record.id)).unwrap(), content);
        assert_eq!(fs::metadata(qdir.join(&record.id)).unwrap().mode() & 0o7777, 0o640);

        restore(&record.id, &qdir).unwrap();
        let after = fs::metadata(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), content);
        assert_eq!(after.mode() & 0o7777, 0o750);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_eq!((after.mtime(), after.mtime_nsec()), (before.mtime(), before.mtime_nsec()));
        assert!(!qdir.join(&record.id).exists());
    }

    #[test]
    fn quarantine_refuses_directories_symlinks_fifos_and_devices() {
        if !require_root("quarantine_refuses_directories_symlinks_fifos_and_devices") {
            return;
        }
        let work = tempfile::tempdir().unwrap();
        let qdir = work.path().join("q");
        let (target, content) = write_payload(work.path(), "target", 0o755);
        let link = work.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let sub = work.path().join("subdir");
        fs::create_dir(&sub).unwrap();
        let fifo = work.path().join("fifo");
        assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let dev = work.path().join("null-dev");
        assert!(Command::new("mknod").arg(&dev).args(["c", "1", "3"]).status().unwrap().success());

        for (path, kind) in
            [(&link, "symlink"), (&sub, "directory"), (&fifo, "fifo"), (&dev, "character device")]
        {
            match quarantine(path, &qdir) {
                Err(HostError::NotRegularFile { kind: k, .. }) => assert_eq!(k, kind),
                other => panic!("{} was not refused: {other:?}", path.display()),
            }
            assert!(fs::symlink_metadata(path).is_ok(), "{} moved", path.display());
        }
        // The symlink was not followed: its target is untouched.
        assert_eq!(fs::read(&target).unwrap(), content);
        assert_eq!(fs::metadata(&target).unwrap().mode() & 0o7777, 0o755);
        assert!(list_quarantine(&qdir).unwrap().records.is_empty());
    }

    #[test]
    fn restore_refuses_when_something_exists_at_the_original_path() {
        if !require_root("restore_refuses_when_something_exists_at_the_original_path") {
            return;
        }
        let work = tempfile::tempdir().unwrap();
        let qdir = work.path().join("q");
        let (path, _) = write_payload(work.path(), "again", 0o755);
        let record = quarantine(&path, &qdir).unwrap();
        fs::write(&path, b"a new file by the same name").unwrap();

        let err = restore(&record.id, &qdir).unwrap_err();

        assert!(matches!(err, HostError::RestoreTargetExists { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"a new file by the same name");
        assert_eq!(list_quarantine(&qdir).unwrap().records, vec![record.clone()]);
        let stored = fs::metadata(qdir.join(&record.id)).unwrap();
        assert_eq!(stored.mode() & 0o7111, 0, "a failed restore left exec bits on the stored copy");
    }

    #[test]
    fn restore_refuses_a_stored_copy_that_changed() {
        if !require_root("restore_refuses_a_stored_copy_that_changed") {
            return;
        }
        let work = tempfile::tempdir().unwrap();
        let qdir = work.path().join("q");
        let (path, _) = write_payload(work.path(), "tampered", 0o755);
        let record = quarantine(&path, &qdir).unwrap();
        fs::write(qdir.join(&record.id), b"something else").unwrap();

        let err = restore(&record.id, &qdir).unwrap_err();

        assert!(matches!(err, HostError::HashMismatch { .. }), "{err}");
        assert!(fs::symlink_metadata(&path).is_err());
        assert!(matches!(restore("../../etc/passwd", &qdir), Err(HostError::UnknownRecord { .. })));
        assert!(matches!(restore("abcdef", &qdir), Err(HostError::UnknownRecord { .. })));
    }

    #[test]
    fn quarantine_refuses_a_symlinked_quarantine_directory() {
        if !require_root("quarantine_refuses_a_symlinked_quarantine_directory") {
            return;
        }
        let work = tempfile::tempdir().unwrap();
        let real = work.path().join("real");
        fs::create_dir(&real).unwrap();
        let qdir = work.path().join("q");
        std::os::unix::fs::symlink(&real, &qdir).unwrap();
        let (path, _) = write_payload(work.path(), "f", 0o755);

        let err = quarantine(&path, &qdir).unwrap_err();

        assert!(matches!(err, HostError::BadQuarantineDir { .. }), "{err}");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o755, "file changed on refusal");
    }
}

mod account {
    use super::*;
    use picket_contain::host::{HostError, LockOptions, Refusal, lock_account, unlock_account};
    use std::sync::Mutex;

    /// useradd/usermod take /etc/passwd's lock and fail if it is held: one account test at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// A user this test added; removed with `userdel -r` on drop.
    struct TestUser {
        name: String,
        uid: u32,
        gid: u32,
    }

    impl TestUser {
        fn add(tag: &str, system: bool) -> Option<TestUser> {
            if !Path::new("/usr/sbin/useradd").exists() {
                eprintln!("SKIPPED (needs useradd): account tests");
                return None;
            }
            let name = format!("picket-t-{}-{tag}", std::process::id());
            let mut cmd = Command::new("useradd");
            cmd.args(["-M", "-s", "/usr/sbin/nologin"]);
            if system {
                cmd.arg("-r");
            }
            let out = cmd.arg(&name).output().unwrap();
            assert!(out.status.success(), "useradd {name}: {}", String::from_utf8_lossy(&out.stderr));
            let user = TestUser { name, uid: 0, gid: 0 };
            let ids = |flag: &str| -> u32 {
                let out = Command::new("id").arg(flag).arg(&user.name).output().unwrap();
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
            };
            let (uid, gid) = (ids("-u"), ids("-g"));
            let mut user = user;
            (user.uid, user.gid) = (uid, gid);
            Some(user)
        }

        fn shadow_line(&self) -> String {
            let shadow = fs::read_to_string("/etc/shadow").unwrap();
            let prefix = format!("{}:", self.name);
            shadow.lines().find(|l| l.starts_with(&prefix)).unwrap().to_string()
        }

        fn field(&self, n: usize) -> String {
            self.shadow_line().split(':').nth(n).unwrap().to_string()
        }

        /// A process running as this user (setpriv execs, so the child itself is the user's).
        fn spawn_session(&self) -> Spawned {
            let child = Spawned::new(
                Command::new("setpriv")
                    .arg(format!("--reuid={}", self.uid))
                    .arg(format!("--regid={}", self.gid))
                    .args(["--clear-groups", "--", "sleep", "60"]),
            );
            let pid = child.pid();
            let uid = self.uid;
            assert!(
                wait_until(Duration::from_secs(5), || {
                    picket_contain::host::process_info(pid).is_some_and(|i| i.uid == uid && i.comm == "sleep")
                }),
                "setpriv did not become the test user"
            );
            child
        }

        /// Only processes this test spawned run as the user: anything else and the test stops
        /// before locking.
        fn assert_only_our_processes(&self, ours: &[i32]) {
            let foreign: Vec<i32> = fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|p| {
                    picket_contain::host::process_info(*p)
                        .is_some_and(|i| i.uid == self.uid || i.euid == self.uid)
                })
                .filter(|p| !ours.contains(p))
                .collect();
            assert!(
                foreign.is_empty(),
                "uid {} has processes this test did not start: {foreign:?}",
                self.uid
            );
        }
    }

    impl Drop for TestUser {
        fn drop(&mut self) {
            let ok =
                Command::new("userdel").args(["-r", &self.name]).output().is_ok_and(|o| o.status.success());
            if !ok {
                let _ = Command::new("userdel").args(["-f", "-r", &self.name]).output();
            }
        }
    }

    fn options() -> LockOptions {
        LockOptions { grace: Duration::from_millis(500), ..LockOptions::default() }
    }

    #[test]
    fn lock_account_locks_expires_and_ends_sessions_and_unlock_restores_the_shadow_line() {
        if !require_root("lock_account_locks_expires_and_ends_sessions_and_unlock_restores_the_shadow_line") {
            return;
        }
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let Some(user) = TestUser::add("lock", false) else { return };
        // A (fake, never usable) hash and an expiry date, so both have something to restore.
        let out = Command::new("usermod").args(["-p", "$6$picket$test", &user.name]).output().unwrap();
        assert!(out.status.success());
        assert!(Command::new("chage").args(["-E", "30000", &user.name]).status().unwrap().success());
        let before = user.shadow_line();
        let mut session = user.spawn_session();
        user.assert_only_our_processes(&[session.pid()]);

        let record = lock_account(&user.name, &options()).unwrap();

        assert!(user.field(1).starts_with('!'), "password not locked: {}", user.shadow_line());
        assert_eq!(user.field(7), "1", "account not expired: {}", user.shadow_line());
        assert_eq!(record.previous_expire, Some(30000));
        assert!(!record.password_was_locked);
        assert!(record.ended_pids.contains(&session.pid()), "{record:?}");
        let status = session.wait_exit(Duration::from_secs(5)).expect("session still running");
        assert!(status.signal().is_some(), "{status:?}");

        unlock_account(&user.name, &record).unwrap();

        assert_eq!(user.shadow_line(), before);
    }

    #[test]
    fn unlock_leaves_a_password_that_was_already_locked_and_clears_the_expiry() {
        if !require_root("unlock_leaves_a_password_that_was_already_locked_and_clears_the_expiry") {
            return;
        }
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let Some(user) = TestUser::add("prelocked", false) else { return };
        // useradd leaves the password as "!" (locked) and no expiry.
        let before = user.shadow_line();
        assert!(user.field(1).starts_with('!'));
        assert_eq!(user.field(7), "");

        let record = lock_account(&user.name, &options()).unwrap();
        assert!(record.password_was_locked);
        assert_eq!(record.previous_expire, None);
        assert_eq!(user.field(7), "1");

        unlock_account(&user.name, &record).unwrap();
        assert_eq!(user.shadow_line(), before);
    }

    #[test]
    fn lock_account_refuses_system_accounts_unless_allowed() {
        if !require_root("lock_account_refuses_system_accounts_unless_allowed") {
            return;
        }
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let Some(user) = TestUser::add("sys", true) else { return };
        let before = user.shadow_line();

        let err = lock_account(&user.name, &options()).unwrap_err();

        assert!(
            matches!(&err, HostError::RefusedUser { reason: Refusal::SystemAccount { uid, .. }, .. } if *uid == user.uid),
            "{err}"
        );
        assert_eq!(user.shadow_line(), before);

        let record = lock_account(&user.name, &LockOptions { allow_system: true, ..options() }).unwrap();
        assert_eq!(user.field(7), "1");
        unlock_account(&user.name, &record).unwrap();
        assert_eq!(user.shadow_line(), before);
    }

    #[test]
    fn lock_account_of_an_unknown_user_is_an_error() {
        let name = format!("picket-t-{}-nobody", std::process::id());
        let err = lock_account(&name, &options()).unwrap_err();
        assert!(matches!(err, HostError::UnknownUser { .. }), "{err}");
        let err = lock_account("-r", &options()).unwrap_err();
        assert!(matches!(err, HostError::InvalidUser { .. }), "{err}");
    }
}

mod deny_exec {
    use super::*;
    use picket_contain::host::{ExecGuard, ExecGuardConfig, ExecMatcher, HostError};
    use sha2::{Digest, Sha256};

    /// Copies a system binary into the test tmpfs under `name`.
    fn install(tmpfs: &TestTmpfs, from: &str, name: &str) -> PathBuf {
        let to = tmpfs.path().join(name);
        fs::copy(from, &to).unwrap();
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
        to
    }

    /// Runs `path`; retries ETXTBSY (another test thread forking while the copy was open).
    fn run(path: &Path) -> io::Result<ExitStatus> {
        for _ in 0..50 {
            match Command::new(path).stdin(Stdio::null()).status() {
                Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(Duration::from_millis(20)),
                other => return other,
            }
        }
        Command::new(path).status()
    }

    fn assert_denied(path: &Path) {
        match run(path) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{}: {e}", path.display()),
            Ok(status) => panic!("{} ran: {status:?}", path.display()),
        }
    }

    fn assert_runs(path: &Path) -> ExitStatus {
        run(path).unwrap_or_else(|e| panic!("{} did not run: {e}", path.display()))
    }

    /// The guard on the test's own tmpfs, or None (skipped) without root or fanotify.
    fn start(
        tmpfs: &TestTmpfs,
        config: impl FnOnce(ExecGuardConfig) -> ExecGuardConfig,
        matcher: ExecMatcher,
    ) -> Option<(ExecGuard, std::sync::mpsc::Receiver<picket_contain::host::DeniedExec>)> {
        match ExecGuard::start(config(ExecGuardConfig::new(vec![tmpfs.path().to_path_buf()], matcher))) {
            Ok(started) => Some(started),
            Err(e @ HostError::Fanotify { .. }) => {
                eprintln!("SKIPPED (fanotify unavailable): {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    fn sha256_of(path: &str) -> String {
        Sha256::digest(fs::read(path).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn deny_exec_refuses_a_matching_path_with_eperm_and_allows_others_until_stopped() {
        if !require_root("deny_exec_refuses_a_matching_path_with_eperm_and_allows_others_until_stopped") {
            return;
        }
        let Some(tmpfs) = TestTmpfs::mount() else { return };
        let evil = install(&tmpfs, "/bin/true", "evil");
        let good = install(&tmpfs, "/bin/true", "good");
        let matcher = ExecMatcher::new().deny_path("**/evil").unwrap();
        let Some((guard, records)) = start(&tmpfs, |c| c, matcher) else { return };

        assert_denied(&evil);
        assert!(assert_runs(&good).success());

        let record = records.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(record.path, evil);
        assert_eq!(record.rule, "path:**/evil");
        assert!(record.pid > 0);
        let counters = guard.counters();
        assert!(counters.denied >= 1 && counters.allowed >= 1, "{counters:?}");
        assert_eq!(counters.failed_open, 0);

        let last = guard.stop();
        assert!(last.denied >= 1);
        assert!(assert_runs(&evil).success(), "evil still denied after the guard stopped");
    }

    #[test]
    fn deny_exec_by_sha256_refuses_a_renamed_copy_of_a_denied_binary() {
        if !require_root("deny_exec_by_sha256_refuses_a_renamed_copy_of_a_denied_binary") {
            return;
        }
        let Some(tmpfs) = TestTmpfs::mount() else { return };
        let disguised = install(&tmpfs, "/bin/false", "innocent-name");
        let good = install(&tmpfs, "/bin/true", "good");
        let matcher = ExecMatcher::new().deny_sha256(&sha256_of("/bin/false")).unwrap();
        let Some((guard, records)) = start(&tmpfs, |c| c, matcher) else { return };

        assert_denied(&disguised);
        assert!(assert_runs(&good).success());
        // Second time from the hash cache.
        assert_denied(&disguised);

        let record = records.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(record.path, disguised);
        assert_eq!(record.rule, format!("sha256:{}", sha256_of("/bin/false")));
        assert_eq!(guard.counters().denied, 2);
        drop(guard);
        assert_eq!(assert_runs(&disguised).code(), Some(1), "false should run and fail after the guard");
    }

    #[test]
    fn deny_exec_fails_open_and_counts_when_the_hash_cannot_be_made_in_time() {
        if !require_root("deny_exec_fails_open_and_counts_when_the_hash_cannot_be_made_in_time") {
            return;
        }
        let Some(tmpfs) = TestTmpfs::mount() else { return };
        let denied = install(&tmpfs, "/bin/false", "denied-by-hash");
        let matcher = ExecMatcher::new().deny_sha256(&sha256_of("/bin/false")).unwrap();

        // No time at all to decide.
        let Some((guard, _records)) =
            start(&tmpfs, |c| ExecGuardConfig { deadline: Duration::ZERO, ..c }, matcher.clone())
        else {
            return;
        };
        assert_eq!(assert_runs(&denied).code(), Some(1), "a decision past its deadline must allow");
        let counters = guard.stop();
        assert_eq!((counters.failed_open, counters.denied), (1, 0), "{counters:?}");

        // Too big to hash.
        let Some((guard, _records)) = start(&tmpfs, |c| ExecGuardConfig { max_hash_bytes: 16, ..c }, matcher)
        else {
            return;
        };
        assert_eq!(assert_runs(&denied).code(), Some(1), "a file over the hash cap must be allowed");
        assert_eq!(guard.stop().failed_open, 1);
    }

    #[test]
    fn deny_exec_rules_can_be_replaced_while_running() {
        if !require_root("deny_exec_rules_can_be_replaced_while_running") {
            return;
        }
        let Some(tmpfs) = TestTmpfs::mount() else { return };
        let evil = install(&tmpfs, "/bin/true", "evil");
        let Some((guard, _records)) = start(&tmpfs, |c| c, ExecMatcher::new().deny_path("**/evil").unwrap())
        else {
            return;
        };
        assert_denied(&evil);
        guard.set_matcher(ExecMatcher::new());
        assert!(assert_runs(&evil).success());
        guard.set_matcher(ExecMatcher::new().deny_path(&format!("{}/**", tmpfs.path().display())).unwrap());
        assert_denied(&evil);
    }

    #[test]
    fn deny_exec_counts_records_dropped_when_the_channel_is_full() {
        if !require_root("deny_exec_counts_records_dropped_when_the_channel_is_full") {
            return;
        }
        let Some(tmpfs) = TestTmpfs::mount() else { return };
        let evil = install(&tmpfs, "/bin/true", "evil");
        let matcher = ExecMatcher::new().deny_path("**/evil").unwrap();
        let Some((guard, records)) = start(&tmpfs, |c| ExecGuardConfig { record_capacity: 1, ..c }, matcher)
        else {
            return;
        };
        for _ in 0..3 {
            assert_denied(&evil);
        }
        let counters = guard.stop();
        assert_eq!((counters.denied, counters.records_dropped), (3, 2), "{counters:?}");
        assert_eq!(records.try_iter().count(), 1);
    }
}
