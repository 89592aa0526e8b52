//! Doing work inside a named network namespace (`ip netns add NAME`, bound at `/run/netns/NAME`).
//!
//! `setns(2)` changes the namespace of the calling *thread* only, so [`Netns::run`] runs the work
//! on a short-lived thread that enters the namespace first; the caller's threads never move. What
//! that thread creates keeps the namespace after it ends: a netlink socket talks to the namespace it
//! was opened in for its whole life, and a child process starts in its parent thread's namespace.
//! This is how tests and benches point [`super::NetContainment`] at a namespace they made, without
//! `ip netns exec` (which would also hide a missing `nft` behind `ip`'s own exit code).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::thread;

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use super::NetError;

/// Where `ip netns add` binds named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// An open handle on a named network namespace.
#[derive(Debug)]
pub struct Netns {
    name: String,
    file: File,
}

impl Netns {
    /// Opens `/run/netns/NAME`. The name must be a plain file name (no `/`, not `.` or `..`).
    pub fn open(name: &str) -> Result<Netns, NetError> {
        let path = Self::path_of(name)?;
        let file = File::open(&path).map_err(|source| NetError::Netns { name: name.to_string(), source })?;
        Ok(Netns { name: name.to_string(), file })
    }

    fn path_of(name: &str) -> Result<PathBuf, NetError> {
        let plain = !name.is_empty()
            && name.len() <= 255
            && name != "."
            && name != ".."
            && !name.contains(['/', '\0']);
        if !plain {
            return Err(NetError::Netns {
                name: name.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a plain namespace name"),
            });
        }
        Ok(Path::new(NETNS_DIR).join(name))
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `work` on a new thread that has entered this namespace, and returns its result. A
    /// panic in `work` is passed on to the caller.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> Result<T, NetError> {
        let joined = thread::scope(|s| {
            s.spawn(|| {
                move_into_link_name_space(self.file.as_fd(), Some(LinkNameSpaceType::Network))
                    .map_err(|e| NetError::Netns { name: self.name.clone(), source: e.into() })?;
                Ok(work())
            })
            .join()
        });
        match joined {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_accepted() {
        for bad in ["", ".", "..", "a/b", "/etc", "x\0y"] {
            assert!(matches!(Netns::open(bad), Err(NetError::Netns { .. })), "{bad:?}");
        }
        assert_eq!(Netns::path_of("picket-t-1").unwrap(), Path::new("/run/netns/picket-t-1"));
    }

    #[test]
    fn a_missing_namespace_is_an_error() {
        let err = Netns::open("picket-no-such-namespace-here").unwrap_err();
        assert!(err.to_string().contains("picket-no-such-namespace-here"), "{err}");
    }
}
