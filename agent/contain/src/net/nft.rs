//! Running `nft -f -` with a script on stdin: how the table, the chains and the isolation rules are
//! loaded. One script is one kernel transaction (nft sends it as one netlink batch), so a script
//! applies whole or not at all. Costs ~5 ms (process start and nft's cache fill), so it is kept off
//! the block path.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::NetError;
use super::netns::Netns;

/// An nft run that takes longer than this is killed and reported as failed: loading picket's
/// rules takes milliseconds, so this only bounds a wedged process.
const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of nft's stderr an error keeps.
const MAX_STDERR: usize = 4096;

/// Runs `program -f -` fed `script`, in `netns` when given (else in the caller's namespace).
pub(crate) fn run(program: &Path, netns: Option<&Netns>, script: &str) -> Result<(), NetError> {
    match netns {
        Some(ns) => ns.run(|| run_here(program, script))?,
        None => run_here(program, script),
    }
}

fn run_here(program: &Path, script: &str) -> Result<(), NetError> {
    let mut child = Command::new(program)
        .args(["-f", "-"])
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => NetError::NftMissing { program: program.to_path_buf() },
            _ => NetError::NftSpawn { program: program.to_path_buf(), source },
        })?;
    let mut stdin = child.stdin.take();
    let mut stderr = child.stderr.take();
    let (status, err_text) = thread::scope(|s| {
        // Read stderr while feeding stdin and waiting, so a chatty nft can't block on a full pipe.
        let reader = s.spawn(move || {
            let mut text = Vec::new();
            if let Some(pipe) = stderr.as_mut() {
                let _ = pipe.read_to_end(&mut text);
            }
            text
        });
        // A failed write (EPIPE) means nft exited early: its status and stderr say why.
        if let Some(pipe) = stdin.as_mut() {
            let _ = pipe.write_all(script.as_bytes());
        }
        drop(stdin.take()); // EOF: nft starts parsing
        let status = wait_with_deadline(&mut child);
        (status, reader.join().unwrap_or_default())
    });
    let stderr_text = truncated(&err_text);
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(NetError::NftFailed {
            program: program.to_path_buf(),
            status: status.to_string(),
            stderr: stderr_text,
        }),
        Err(source) => Err(NetError::NftSpawn { program: program.to_path_buf(), source }),
    }
}

fn wait_with_deadline(child: &mut std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + NFT_TIMEOUT;
    // Short sleeps first: nft usually exits within a few ms.
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("nft still running after {NFT_TIMEOUT:?}, killed"),
            ));
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn truncated(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(MAX_STDERR) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}
