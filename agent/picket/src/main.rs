//! `picket`: argument parsing and dispatch. Everything else lives in the modules below; the agent
//! itself starts in [`runtime::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[cfg(feature = "collect")]
mod collect;
mod commands;
mod config;
mod device;
mod health;
mod liveview;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod mathlib;
mod policy;
mod runtime;
mod sigma;

/// A small security agent: captures process, file, network and login events, decides and acts on
/// the device, journals everything to SQLite, and syncs signed batches to a SOC.
#[derive(Debug, Parser)]
#[command(name = "picket", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (with no --config: the embedded default, unprivileged, data in ./picket-data).
    Run {
        /// Config file (TOML); see `picket config default`.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the default config, or validate a config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Validate policy files or run their test cases.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Feed recorded input through the normalizers and policy engine; print NDJSON. Never touches the host.
    Replay {
        #[arg(long, value_enum)]
        format: ReplayFormat,
        #[arg(long, value_name = "DIR")]
        policies: Option<PathBuf>,
        /// What to print: events, decisions (comma-separated).
        #[arg(long, value_name = "LIST", default_value = "events,decisions")]
        emit: String,
        /// Input file, or - for standard input.
        input: String,
    },
    /// Inspect the local journal.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Print the device id and public key (creates the signing key on first use).
    Identity {
        #[command(flatten)]
        loc: DataLocation,
        /// Print only the public key line, the form the collector's device_keys_dir takes.
        #[arg(long)]
        export: bool,
    },
    /// Containment state: what is in force, until when, and undo.
    #[command(subcommand)]
    Actions(ActionsCommand),
    /// Health of a running agent: sources, drops, queue depths, journal size, backlog, last sync.
    Status {
        #[command(flatten)]
        loc: DataLocation,
    },
    /// SOC side: subscribe, verify, dedup, write verified NDJSON, report anomalies.
    Collect {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print the collector's public key line (for the devices' uplink.collector_key_file) and exit.
        #[arg(long)]
        export_key: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the embedded default config (every key, commented).
    Default,
    /// Validate a config file; every error with file, line and key; exit 2 on error.
    Check { file: PathBuf },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate policy files; errors with file and line; exit 2 on error.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run the test cases shipped beside policies.
    Test {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum JournalCommand {
    /// Event counts, size, sequence range, evictions and backlog.
    Stats {
        #[command(flatten)]
        loc: DataLocation,
    },
    /// Print journaled events as NDJSON in sequence order.
    Export {
        #[command(flatten)]
        loc: DataLocation,
        /// Only events with a seq greater than N (pass the last seq you have to resume).
        #[arg(long, value_name = "N", default_value_t = 0)]
        since_seq: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ActionsCommand {
    /// What containment is in force, and until when.
    List {
        #[command(flatten)]
        loc: DataLocation,
        /// Also show what ended (expired, reverted, failed): the last 100 actions.
        #[arg(long)]
        all: bool,
    },
    /// Undo one action (by the ID `actions list` shows): unblock, release, unlock, restore.
    Revert {
        id: String,
        #[command(flatten)]
        loc: DataLocation,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReplayFormat {
    Events,
    AuthLog,
    Pcap,
}

/// Where the agent's data lives: `--data-dir`, else `agent.data_dir` of `--config`, else the
/// embedded default (`./picket-data`).
#[derive(Debug, Clone, Args)]
struct DataLocation {
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, value_name = "FILE", conflicts_with = "data_dir")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("picket: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => runtime::run(config.as_deref()),
        Command::Config(ConfigCommand::Default) => {
            print!("{}", config::DEFAULT_CONFIG);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => Ok(commands::config_check(&file)),
        Command::Journal(JournalCommand::Stats { loc }) => commands::journal_stats(&loc.data_dir()?),
        Command::Journal(JournalCommand::Export { loc, since_seq }) => {
            commands::journal_export(&loc.data_dir()?, since_seq)
        }
        Command::Status { loc } => commands::status(&loc.data_dir()?),
        Command::Policy(PolicyCommand::Check { paths }) => {
            Ok(policy::check(&paths, config::default_settings().policies.sigma_min_level))
        }
        Command::Policy(PolicyCommand::Test { paths }) => Ok(policy::test(&paths)),
        Command::Replay { format: ReplayFormat::Events, policies, emit, input } => {
            policy::replay_events(&input, policies.as_deref(), &emit)
        }
        Command::Replay { format: ReplayFormat::AuthLog, policies, emit, input } => {
            policy::replay_auth_log(&input, policies.as_deref(), &emit)
        }
        Command::Replay { format: ReplayFormat::Pcap, policies, emit, input } => {
            commands::replay_pcap(&input, policies.as_deref(), &emit)
        }
        Command::Identity { loc, export } => {
            let (data_dir, device_id) = loc.data_dir_and_device_id()?;
            commands::identity(&data_dir, &device_id, export)
        }
        Command::Actions(ActionsCommand::List { loc, all }) => commands::actions_list(&loc.data_dir()?, all),
        Command::Actions(ActionsCommand::Revert { id, loc }) => {
            commands::actions_revert(&loc.data_dir()?, &id)
        }
        #[cfg(feature = "collect")]
        Command::Collect { config, export_key } => collect::run(&config, export_key),
        #[cfg(not(feature = "collect"))]
        Command::Collect { .. } => {
            anyhow::bail!(
                "this build has no collector (cargo feature `collect`; the edge builds leave it out): \
                 run `picket collect` from a full build at the SOC"
            )
        }
    }
}

impl DataLocation {
    /// The data dir and `agent.device_id` (empty without --config: derived).
    fn data_dir_and_device_id(&self) -> anyhow::Result<(PathBuf, String)> {
        let settings = match &self.config {
            Some(f) => config::load_file(f).map_err(|e| anyhow::anyhow!("{e}"))?,
            None => config::default_settings(),
        };
        let dir = self.data_dir.clone().unwrap_or(settings.agent.data_dir);
        Ok((dir, settings.agent.device_id))
    }

    fn data_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        let settings = match &self.config {
            Some(f) => config::load_file(f).map_err(|e| anyhow::anyhow!("{e}"))?,
            None => config::default_settings(),
        };
        Ok(settings.agent.data_dir)
    }
}

/// glibc gives threads that allocate at the same time arenas of their own (up to 8 per core), each
/// keeping the memory freed in it: ~5 MiB of resident memory under load for the agent's dozen
/// threads, for no gain at its allocation rate. One arena: 22 instead of 27 MiB steady at
/// 1,000 events/s, same CPU (docs/BENCHMARKS.md, "The whole agent under load").
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter, from the main thread before any other
    // thread exists. Its result (0 when refused) changes nothing we rely on.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// musl has one allocator arena already.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
