//! Policies in the binary: `policy check`, `policy test`, `replay`, loading for the agent, and
//! the engine state file that keeps an attacker's count across restarts.

use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use picket_event::Event;
use picket_policy::{Decision, Engine, PolicySet, StateLimits, StateSnapshot};

use crate::config::{self, Mode as AgentMode, SigmaLevel};
use crate::sigma::Sigma;

/// Exit code for invalid policies or input.
const EXIT_INVALID: u8 = 2;
/// Exit code when policy test cases fail.
const EXIT_TESTS_FAILED: u8 = 1;

/// The engine state file in the data dir (windows and sequences in progress).
pub const STATE_FILE: &str = "policy-state.json";

/// The agent mode as the policy crate names it.
pub fn agent_mode(m: AgentMode) -> picket_policy::Mode {
    match m {
        AgentMode::Monitor => picket_policy::Mode::Monitor,
        AgentMode::Enforce => picket_policy::Mode::Enforce,
    }
}

/// Load the configured policy paths for the agent. Paths that do not exist are left out with a
/// warning (the embedded default names `policies`, which only exists in a checkout); invalid
/// policies are an error with every problem listed.
pub fn load_for_agent(paths: &[PathBuf]) -> Result<(PolicySet, Vec<String>), String> {
    let mut warnings = Vec::new();
    let existing: Vec<PathBuf> = paths
        .iter()
        .filter(|p| {
            let ok = p.exists();
            if !ok {
                warnings.push(format!("policies.paths: {} does not exist; no policies from it", p.display()));
            }
            ok
        })
        .cloned()
        .collect();
    let set = picket_policy::load_paths(&existing).map_err(|e| e.to_string())?;
    Ok((set, warnings))
}

/// `picket policy check`: picket's policies and the Sigma rules among them. Sigma rules that
/// cannot apply to picket's events are listed with the reason; they do not fail the check.
pub fn check(paths: &[PathBuf], sigma_min_level: SigmaLevel) -> ExitCode {
    let mut ok = true;
    match picket_policy::load_paths(paths) {
        Ok(set) => println!("{} rule(s) ok", set.len()),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} error(s)", errors.0.len());
            ok = false;
        }
    }
    match Sigma::load(paths, sigma_min_level) {
        Ok((_, loaded)) if loaded.files == 0 => {}
        Ok((_, loaded)) => {
            for n in &loaded.notes {
                println!("{n}");
            }
            println!("{} ok", loaded.summary());
        }
        Err(errors) => {
            eprintln!("{errors}");
            ok = false;
        }
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_INVALID) }
}

pub fn test(paths: &[PathBuf]) -> ExitCode {
    let report = picket_policy::run_tests(paths);
    println!("{report}");
    if !report.errors.is_empty() {
        ExitCode::from(EXIT_INVALID)
    } else if report.failed() > 0 || report.cases.is_empty() {
        if report.cases.is_empty() {
            eprintln!("no test cases found in {}", display_paths(paths));
        }
        ExitCode::from(EXIT_TESTS_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// What `replay --emit` prints.
#[derive(Debug, Clone, Copy)]
pub struct Emit {
    pub events: bool,
    pub decisions: bool,
}

impl Emit {
    pub fn parse(s: &str) -> anyhow::Result<Emit> {
        let mut e = Emit { events: false, decisions: false };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "events" => e.events = true,
                "decisions" => e.decisions = true,
                other => anyhow::bail!("--emit: unknown item {other:?}; use events, decisions or both"),
            }
        }
        Ok(e)
    }
}

/// The rules replay runs: picket's policies and the Sigma rules among the same paths.
pub(crate) struct Replay {
    engine: Engine,
    sigma: Sigma,
    decisions: Vec<Decision>,
    alerts: Vec<Event>,
}

/// The rules for replay: `--policies DIR`, else the config's `policies.paths` (embedded
/// default: `policies`).
pub(crate) fn replay_rules(dir: Option<&Path>) -> Result<Replay, ExitCode> {
    let defaults = config::default_settings();
    let paths = match dir {
        Some(d) => vec![d.to_path_buf()],
        None => defaults.policies.paths.clone(),
    };
    let loaded = match dir {
        Some(_) => picket_policy::load_paths(&paths).map_err(|e| e.to_string()),
        None => load_for_agent(&paths).map(|(set, warnings)| {
            for w in warnings {
                eprintln!("picket replay: {w} (use --policies DIR)");
            }
            set
        }),
    };
    let fail = |errors: String| {
        eprintln!("{errors}");
        ExitCode::from(EXIT_INVALID)
    };
    let set = loaded.map_err(fail)?;
    let (sigma, _) = Sigma::load(&paths, defaults.policies.sigma_min_level).map_err(fail)?;
    Ok(Replay {
        engine: Engine::new(Arc::new(set), StateLimits::default()),
        sigma,
        decisions: Vec::new(),
        alerts: Vec::new(),
    })
}

/// Where a replayed event came from, named in its decisions: `trigger_line` (the input line of a
/// text format) or `trigger_event` (the n-th event decoded from a capture, from 1).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Origin {
    Line(usize),
    Event(u64),
}

/// One event through the rules, printed per `emit`: with `events`, the event and then each Sigma
/// alert it raised; with `decisions`, each policy decision (on the event, then on its Sigma
/// alerts).
pub(crate) fn emit_one(
    out: &mut impl Write,
    r: &mut Replay,
    ev: &Event,
    line: Origin,
    emit: Emit,
) -> io::Result<()> {
    r.engine.evaluate(ev, &mut r.decisions);
    r.sigma.detect(ev, &mut r.alerts);
    if emit.events {
        serde_json::to_writer(&mut *out, ev)?;
        out.write_all(b"\n")?;
    }
    write_decisions(out, &mut r.decisions, ev, line, emit)?;
    for alert in std::mem::take(&mut r.alerts) {
        r.engine.evaluate(&alert, &mut r.decisions);
        if emit.events {
            serde_json::to_writer(&mut *out, &alert)?;
            out.write_all(b"\n")?;
        }
        write_decisions(out, &mut r.decisions, &alert, line, emit)?;
    }
    Ok(())
}

fn write_decisions(
    out: &mut impl Write,
    decisions: &mut Vec<Decision>,
    trigger: &Event,
    line: Origin,
    emit: Emit,
) -> io::Result<()> {
    if emit.decisions {
        for d in decisions.iter() {
            let mut v = serde_json::to_value(d).map_err(io::Error::other)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("kind".into(), "decision".into());
                if trigger.seq != 0 {
                    o.insert("trigger_seq".into(), trigger.seq.into());
                }
                if let Some(rule) =
                    trigger.rule.as_ref().filter(|_| trigger.kind == picket_event::EventKind::Alert)
                {
                    o.insert("trigger_rule".into(), rule.id.clone().into());
                }
                match line {
                    Origin::Line(n) => o.insert("trigger_line".into(), n.into()),
                    Origin::Event(n) => o.insert("trigger_event".into(), n.into()),
                };
            }
            serde_json::to_writer(&mut *out, &v)?;
            out.write_all(b"\n")?;
        }
    }
    decisions.clear();
    Ok(())
}

/// `picket replay --format events`: NDJSON events (as `journal export` prints them) through the
/// real engine. Never touches the host: there is no actions module in this path at all.
pub fn replay_events(input: &str, policies: Option<&Path>, emit: &str) -> anyhow::Result<ExitCode> {
    let emit = Emit::parse(emit)?;
    let mut rules = match replay_rules(policies) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let reader = open_input(input)?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut bad = 0u64;
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line.with_context(|| format!("reading {input}"))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Event>(&line) {
            Ok(ev) => match emit_one(&mut out, &mut rules, &ev, Origin::Line(i + 1), emit) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
                Err(e) => return Err(e.into()),
            },
            Err(e) => {
                bad += 1;
                if bad <= 20 {
                    eprintln!("{input}:{}: not a picket event, skipped: {e}", i + 1);
                }
            }
        }
    }
    out.flush().ok();
    if bad > 0 {
        eprintln!("{input}: {bad} line(s) skipped");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    Ok(ExitCode::SUCCESS)
}

/// Engine state from the data dir, if any. A state file that does not parse is set aside
/// (renamed with `.bad`) rather than deleted, and the agent starts with empty windows.
pub fn load_state(data_dir: &Path) -> Option<StateSnapshot> {
    let path = data_dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    match serde_json::from_str(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            let aside = path.with_extension("json.bad");
            eprintln!(
                "picket: warning: {} is unreadable ({e}); moved to {} and starting with empty windows",
                path.display(),
                aside.display()
            );
            let _ = std::fs::rename(&path, &aside);
            None
        }
    }
}

/// Write the engine state atomically (tmp + rename).
pub fn save_state(data_dir: &Path, engine: &Engine) -> anyhow::Result<()> {
    let path = data_dir.join(STATE_FILE);
    let tmp = data_dir.join(".policy-state.json.tmp");
    // Streamed to the file: a buffer of the whole JSON was the agent's biggest transient
    // allocation (~2 MB with a few thousand groups), every STATE_SAVE_INTERVAL.
    let file = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    let mut out = io::BufWriter::new(file);
    serde_json::to_writer(&mut out, &engine.snapshot())?;
    out.flush().with_context(|| format!("writing {}", tmp.display()))?;
    drop(out);
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

fn open_input(input: &str) -> anyhow::Result<Box<dyn BufRead>> {
    Ok(if input == "-" {
        Box::new(io::BufReader::new(io::stdin()))
    } else {
        Box::new(io::BufReader::new(std::fs::File::open(input).with_context(|| format!("opening {input}"))?))
    })
}

/// `picket replay --format auth-log`: log lines through the real auth parser and engine. Lines
/// that are not authentication events are passed over; malformed ones are counted and named on
/// stderr (the first few), never fatal. Classic syslog lines carry no year: the file's mtime (or,
/// for standard input, the current date) supplies it.
pub fn replay_auth_log(input: &str, policies: Option<&Path>, emit: &str) -> anyhow::Result<ExitCode> {
    use picket_capture::auth::{Line, MAX_LINE, ParseOutcome, YearHint, for_each_line, parse_line};
    use std::ops::ControlFlow;
    let emit = Emit::parse(emit)?;
    let mut rules = match replay_rules(policies) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let year_from = if input == "-" {
        picket_event::Timestamp::now()
    } else {
        std::fs::metadata(input)
            .and_then(|m| m.modified())
            .map_or_else(|_| picket_event::Timestamp::now(), picket_event::Timestamp::from)
    };
    let year = YearHint::from_timestamp(year_from);
    let mut reader: Box<dyn BufRead> = if input == "-" {
        Box::new(io::BufReader::with_capacity(1 << 16, io::stdin()))
    } else {
        let file = std::fs::File::open(input).with_context(|| format!("opening {input}"))?;
        Box::new(io::BufReader::with_capacity(1 << 16, file))
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let (mut lines, mut events, mut malformed) = (0usize, 0u64, 0u64);
    let mut failed: Option<io::Error> = None;
    // Lines are parsed where they lie in the read buffer (no allocation per line), and one over
    // the tailer's limit is skipped and counted like a malformed one.
    let read = for_each_line(&mut reader, MAX_LINE, |line| {
        lines += 1;
        let outcome = match line {
            Line::Complete(bytes) => parse_line(bytes, year),
            Line::TooLong => ParseOutcome::Malformed("line too long"),
        };
        match outcome {
            ParseOutcome::Event(ev) => {
                events += 1;
                if let Err(e) = emit_one(&mut out, &mut rules, &ev, Origin::Line(lines), emit) {
                    failed = Some(e);
                    return ControlFlow::Break(());
                }
            }
            ParseOutcome::NotAuth => {}
            ParseOutcome::Malformed(why) => {
                malformed += 1;
                if malformed <= 20 {
                    eprintln!("{input}:{lines}: skipped: {why}");
                }
            }
        }
        ControlFlow::Continue(())
    });
    read.with_context(|| format!("reading {input}"))?;
    match failed {
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        Some(e) => return Err(e.into()),
        None => {}
    }
    out.flush().ok();
    eprintln!("{input}: {lines} lines, {events} auth events, {malformed} malformed (skipped)");
    Ok(ExitCode::SUCCESS)
}
