//! lock_account / unlock_account: password lock, account expiry, sessions ended; exact undo.
//!
//! The shadow tools (`usermod`, `chage`) do the writing, so /etc/shadow keeps its locking
//! (`/etc/.pwd.lock`), backup (`shadow-`) and nscd/sssd notification conventions. Only the
//! user name is ever passed on a command line, never a hash. The [`LockRecord`] remembers the
//! two facts unlock needs (was the password already locked, what was the expiry), not the hash.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::error::{HostError, Refusal};
use super::kill::end_processes_of_uid;

/// Expiry written by the lock: day 1 after the epoch. Day 0 is ambiguous (shadow(5): "either an
/// account with no expiration, or an expiration on Jan 1, 1970").
const LOCKED_EXPIRE: i64 = 1;

/// UID_MIN when /etc/login.defs does not say.
const DEFAULT_UID_MIN: u32 = 1000;

/// What [`lock_account`] may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOptions {
    /// Allow locking uid 0. Off by default: locking root can lock the operator out.
    pub allow_root: bool,
    /// Allow locking system accounts (uid below UID_MIN, other than 0).
    pub allow_system: bool,
    /// Grace between SIGTERM and SIGKILL for the user's processes.
    pub grace: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions { allow_root: false, allow_system: false, grace: Duration::from_secs(2) }
    }
}

/// What a lock changed, and what unlock needs to put back exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// User name.
    pub user: String,
    /// Its uid at lock time (unlock refuses if the name now has another uid).
    pub uid: u32,
    /// The password field already started with `!`: the lock did not touch it, nor does unlock.
    pub password_was_locked: bool,
    /// The password field was empty (no password): unlock sets it back to empty.
    pub password_was_empty: bool,
    /// Field 8 of the shadow line before the lock (days since the epoch); `None` = never expires.
    pub previous_expire: Option<i64>,
    /// Processes of the user that ended.
    pub ended_pids: Vec<i32>,
    /// Processes of the user still alive after SIGKILL (uninterruptible sleep).
    pub still_alive: Vec<i32>,
    /// When it was locked, RFC 3339 UTC.
    pub locked_at: String,
}

/// Locks `user`: password locked (`usermod -L`), account expired (`chage -E 1`), every process
/// with the user's real or effective uid ended.
///
/// # Errors
/// [`HostError::InvalidUser`], [`HostError::UnknownUser`], [`HostError::RefusedUser`] (root,
/// system accounts), [`HostError::Command`] if a tool failed (a half-done lock is undone),
/// [`HostError::AccountState`] if /etc/shadow does not show the lock afterwards.
pub fn lock_account(user: &str, options: &LockOptions) -> Result<LockRecord, HostError> {
    check_name(user)?;
    let uid = lookup_uid(user)?;
    if let Some(reason) = refusal(uid, uid_min(Path::new("/etc/login.defs")), options) {
        return Err(HostError::RefusedUser { user: user.to_string(), reason });
    }
    let before = shadow_entry(user)?;
    let password_was_locked = before.password.starts_with('!');
    let password_was_empty = before.password.is_empty();

    if !password_was_locked {
        run(user, "usermod", &["-L"])?;
    }
    if let Err(e) = run(user, "chage", &["-E", &LOCKED_EXPIRE.to_string()]) {
        if !password_was_locked {
            let _ = unlock_password(user, password_was_empty);
        }
        return Err(e);
    }
    let after = shadow_entry(user)?;
    if !after.password.starts_with('!') || after.expire != Some(LOCKED_EXPIRE) {
        return Err(HostError::AccountState {
            user: user.to_string(),
            detail: format!(
                "after the lock /etc/shadow shows a password {} and expiry {:?}",
                if after.password.starts_with('!') { "locked" } else { "NOT locked" },
                after.expire
            ),
        });
    }

    let outcome = end_processes_of_uid(uid, options.grace);
    let mut ended_pids = outcome.ended_by_term;
    ended_pids.extend(outcome.ended_by_kill);
    Ok(LockRecord {
        user: user.to_string(),
        uid,
        password_was_locked,
        password_was_empty,
        previous_expire: before.expire,
        ended_pids,
        still_alive: outcome.still_alive,
        locked_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    })
}

/// Reverts [`lock_account`]: unlocks the password if the lock locked it, and puts the expiry
/// back to exactly what it was.
///
/// # Errors
/// [`HostError::AccountState`] if the record is for another user or the name now has another
/// uid, or /etc/shadow does not show the old state afterwards; [`HostError::Command`] if a tool
/// failed.
pub fn unlock_account(user: &str, record: &LockRecord) -> Result<(), HostError> {
    check_name(user)?;
    let state = |detail: String| HostError::AccountState { user: user.to_string(), detail };
    if record.user != user {
        return Err(state(format!("the lock record is for user {:?}", record.user)));
    }
    let uid = lookup_uid(user)?;
    if uid != record.uid {
        return Err(state(format!("uid is now {uid}, was {} when locked: not unlocked", record.uid)));
    }
    if !record.password_was_locked {
        unlock_password(user, record.password_was_empty)?;
    }
    let expire = record.previous_expire.map_or_else(|| "-1".to_string(), |d| d.to_string());
    run(user, "chage", &["-E", &expire])?;
    let after = shadow_entry(user)?;
    if after.expire != record.previous_expire {
        return Err(state(format!(
            "expiry is {:?} after unlock, expected {:?}",
            after.expire, record.previous_expire
        )));
    }
    if !record.password_was_locked && after.password.starts_with('!') {
        return Err(state("password still locked after unlock".to_string()));
    }
    Ok(())
}

/// The built-in refusal for locking `uid`, if any.
fn refusal(uid: u32, uid_min: u32, options: &LockOptions) -> Option<Refusal> {
    if uid == 0 {
        return (!options.allow_root).then_some(Refusal::Root);
    }
    (uid < uid_min && !options.allow_system).then_some(Refusal::SystemAccount { uid, uid_min })
}

fn unlock_password(user: &str, was_empty: bool) -> Result<(), HostError> {
    if was_empty {
        // `usermod -U` refuses to produce a passwordless account; the lock made "" into "!".
        run(user, "usermod", &["-p", ""])
    } else {
        run(user, "usermod", &["-U"])
    }
}

/// A user name that is safe as the last argument of usermod/chage and a key in /etc/passwd.
fn check_name(user: &str) -> Result<(), HostError> {
    let ok = !user.is_empty()
        && user.len() <= 256
        && !user.starts_with('-')
        && user.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$' | b'@'));
    if ok { Ok(()) } else { Err(HostError::InvalidUser { user: user.to_string() }) }
}

fn lookup_uid(user: &str) -> Result<u32, HostError> {
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| HostError::io("read", "/etc/passwd", e))?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next()? == user).then_some(())?;
            fields.nth(1)?.parse::<u32>().ok()
        })
        .ok_or_else(|| HostError::UnknownUser { user: user.to_string() })
}

/// `UID_MIN` from login.defs, or 1000.
fn uid_min(login_defs: &Path) -> u32 {
    let Ok(text) = std::fs::read_to_string(login_defs) else { return DEFAULT_UID_MIN };
    parse_uid_min(&text).unwrap_or(DEFAULT_UID_MIN)
}

fn parse_uid_min(text: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut words = line.split_ascii_whitespace();
        (words.next()? == "UID_MIN").then_some(())?;
        words.next()?.parse().ok()
    })
}

/// The two shadow fields a lock changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ShadowEntry {
    password: String,
    expire: Option<i64>,
}

fn shadow_entry(user: &str) -> Result<ShadowEntry, HostError> {
    let shadow =
        std::fs::read_to_string("/etc/shadow").map_err(|e| HostError::io("read", "/etc/shadow", e))?;
    parse_shadow(&shadow, user).ok_or_else(|| HostError::AccountState {
        user: user.to_string(),
        detail: "no entry in /etc/shadow".into(),
    })
}

fn parse_shadow(shadow: &str, user: &str) -> Option<ShadowEntry> {
    shadow.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() != Some(&user) || fields.len() < 8 {
            return None;
        }
        let expire = match fields[7] {
            "" => None,
            days => Some(days.parse().ok()?),
        };
        Some(ShadowEntry { password: fields[1].to_string(), expire })
    })
}

/// Runs `tool args... user` with a C locale; stderr goes into the error.
fn run(user: &str, tool: &str, args: &[&str]) -> Result<(), HostError> {
    let program = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.exists())
        .unwrap_or_else(|| tool.into());
    let command = format!(
        "{tool} {} {user}",
        args.iter().map(|a| if a.is_empty() { "''" } else { a }).collect::<Vec<_>>().join(" ")
    );
    let err =
        |detail: String| HostError::Command { command: command.clone(), user: user.to_string(), detail };
    let output = Command::new(&program)
        .args(args)
        .arg(user)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| err(format!("cannot run {}: {e}", program.display())))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(err(format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_fields_are_read_by_position() {
        let shadow = "root:*:19000:0:99999:7:::\nbob:$6$x$y:20780:0:99999:7::1:\nann:!:20780:0:99999:7:::\n";
        assert_eq!(
            parse_shadow(shadow, "bob"),
            Some(ShadowEntry { password: "$6$x$y".into(), expire: Some(1) })
        );
        assert_eq!(parse_shadow(shadow, "ann"), Some(ShadowEntry { password: "!".into(), expire: None }));
        assert_eq!(parse_shadow(shadow, "bo"), None);
    }

    #[test]
    fn uid_min_comes_from_login_defs_with_a_default() {
        assert_eq!(parse_uid_min("#UID_MIN 5\nUID_MIN\t\t 2000\nSUB_UID_MIN 100000\n"), Some(2000));
        assert_eq!(parse_uid_min("SYS_UID_MIN 100\n"), None);
        assert_eq!(uid_min(Path::new("/nonexistent/login.defs")), DEFAULT_UID_MIN);
    }

    #[test]
    fn user_names_that_look_like_options_are_invalid() {
        assert!(check_name("-r").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("a:b").is_err());
        assert!(check_name("picket-t-123").is_ok());
        assert!(check_name("machine$").is_ok());
    }

    #[test]
    fn root_and_system_accounts_are_refused_unless_allowed() {
        let default = LockOptions::default();
        assert_eq!(refusal(0, 1000, &default), Some(Refusal::Root));
        assert_eq!(
            refusal(0, 1000, &LockOptions { allow_system: true, ..default.clone() }),
            Some(Refusal::Root)
        );
        assert_eq!(refusal(0, 1000, &LockOptions { allow_root: true, ..default.clone() }), None);
        assert_eq!(refusal(33, 1000, &default), Some(Refusal::SystemAccount { uid: 33, uid_min: 1000 }));
        assert_eq!(refusal(33, 1000, &LockOptions { allow_system: true, ..default.clone() }), None);
        assert_eq!(refusal(1000, 1000, &default), None);
    }
}
