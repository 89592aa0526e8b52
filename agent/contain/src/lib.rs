//! picket-contain: the only module that changes the host.
//!
//! - [`net`]: block_ip and isolate_host through nftables, in picket's own table `inet picket` only.
//! - [`host`]: kill, quarantine, lock_account, deny_exec.

pub mod host;
pub mod net;
