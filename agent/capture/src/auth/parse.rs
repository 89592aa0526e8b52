//! The auth-log line parser: pure, byte-level, no regex, no allocation except the event it
//! returns. See the module docs of [`crate::auth`] for the line forms and the trusted-end rule.

use std::net::IpAddr;

use memchr::{memchr, memmem};
use picket_event::{Endpoint, Event, EventKind, Process, Timestamp, User, severity};

/// `message` is cut to at most this many bytes (on a character boundary).
pub const MAX_MESSAGE: usize = 512;
/// `user.name` is cut to at most this many bytes. sshd itself logs at most 100 bytes of a name.
pub const MAX_USER: usize = 256;

const DATASET: &str = "picket.auth";
const MODULE: &str = "auth-log";

/// The year (and month) to give classic syslog timestamps, which carry none.
///
/// A line's month later than `month` belongs to the year before: a log written in January holds
/// December's lines from the previous year, and no line is from the future.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YearHint {
    year: i32,
    month: u8,
}

impl YearHint {
    /// `month` is 1..=12 (clamped).
    pub fn new(year: i32, month: u8) -> YearHint {
        YearHint { year, month: month.clamp(1, 12) }
    }

    /// Every month of `year`: no rollover.
    pub fn year(year: i32) -> YearHint {
        YearHint::new(year, 12)
    }

    /// The year and month of `ts` (UTC), e.g. a log file's mtime.
    pub fn from_timestamp(ts: Timestamp) -> YearHint {
        let days = ts.unix_nanos().div_euclid(NANOS_PER_DAY);
        let (y, m, _) = civil_from_days(days);
        YearHint::new(i32::try_from(y).unwrap_or(i32::MAX), u8::try_from(m).unwrap_or(12))
    }

    fn year_for(self, month: u32) -> i64 {
        if month > u32::from(self.month) { i64::from(self.year) - 1 } else { i64::from(self.year) }
    }
}

impl From<i32> for YearHint {
    fn from(year: i32) -> YearHint {
        YearHint::year(year)
    }
}

/// What one log line came to.
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "not boxed on purpose: an Event is over 1 KiB, and a malloc that size per event costs \
              glibc a fastbin consolidation each time (~6 % of a replay); the outcome lives on the \
              stack for one line"
)]
pub enum ParseOutcome {
    /// An `auth.failure` or `auth.success`.
    Event(Event),
    /// A well-formed line that is not an authentication event (most lines).
    NotAuth,
    /// A line that could not be read: no timestamp, or an auth message whose source address
    /// cannot be told apart from attacker-supplied text. Counted, then skipped.
    Malformed(&'static str),
}

/// How the authentication went: the token that becomes `event.action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method<'a> {
    /// An SSH userauth method as sshd names it: `password`, `publickey`,
    /// `keyboard-interactive/pam`, `none`, `hostbased`, ... (ASCII letters, digits, `-/@._`).
    Ssh(&'a [u8]),
    Password,
    Publickey,
    InvalidUser,
    MaxAttempts,
    Pam,
    PreauthDisconnect,
    NotAllowed,
    Command,
    Su,
}

/// `event.action` is cut to at most this many bytes; sshd's method names are far shorter.
const MAX_ACTION: usize = 64;

impl Method<'_> {
    fn action(self) -> String {
        let s = match self {
            Method::Ssh(m) => return clean(m, MAX_ACTION),
            Method::Password => "password",
            Method::Publickey => "publickey",
            Method::InvalidUser => "invalid_user",
            Method::MaxAttempts => "max_attempts",
            Method::Pam => "pam",
            Method::PreauthDisconnect => "preauth_disconnect",
            Method::NotAllowed => "not_allowed",
            Method::Command => "command",
            Method::Su => "su",
        };
        s.to_string()
    }
}

/// The program that wrote the line, as far as we parse it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prog {
    Sshd,
    Dropbear,
    Sudo,
    Su,
    Other,
}

impl Prog {
    fn from_tag(name: &[u8]) -> Prog {
        // A full path as ident (`/usr/sbin/sshd[1]:`) names the same program.
        let base = memchr::memrchr(b'/', name).map_or(name, |i| &name[i + 1..]);
        match base {
            // OpenSSH 9.8 split the per-connection work into sshd-session and sshd-auth.
            b"sshd" | b"sshd-session" | b"sshd-auth" => Prog::Sshd,
            b"dropbear" => Prog::Dropbear,
            b"sudo" => Prog::Sudo,
            b"su" => Prog::Su,
            _ => Prog::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Prog::Sshd => "sshd",
            Prog::Dropbear => "dropbear",
            Prog::Sudo => "sudo",
            Prog::Su => "su",
            Prog::Other => "",
        }
    }
}

/// What a message parser found.
#[derive(Debug)]
struct Found<'a> {
    success: bool,
    method: Method<'a>,
    user: Option<&'a [u8]>,
    ip: Option<IpAddr>,
    port: Option<u16>,
    command: Option<&'a [u8]>,
}

impl<'a> Found<'a> {
    fn new(success: bool, method: Method<'a>) -> Found<'a> {
        Found { success, method, user: None, ip: None, port: None, command: None }
    }

    fn failure(method: Method<'a>) -> Found<'a> {
        Found::new(false, method)
    }

    fn success(method: Method<'a>) -> Found<'a> {
        Found::new(true, method)
    }

    fn user(mut self, user: &'a [u8]) -> Found<'a> {
        self.user = Some(user);
        self
    }

    fn addr(mut self, ip: IpAddr, port: Option<u16>) -> Found<'a> {
        self.ip = Some(ip);
        self.port = port;
        self
    }
}

/// A message parser's answer: `Ok(None)` is "not an auth event".
type MsgResult<'a> = Result<Option<Found<'a>>, &'static str>;

/// Parse one log line (without or with its `\n`). Never panics, whatever the bytes.
pub fn parse_line(line: &[u8], year: YearHint) -> ParseOutcome {
    let line = trim_eol(line);
    if line.is_empty() {
        return ParseOutcome::NotAuth;
    }
    let header = match parse_header(line, year) {
        Ok(Some(h)) => h,
        Ok(None) => return ParseOutcome::NotAuth,
        Err(why) => return ParseOutcome::Malformed(why),
    };
    dispatch(&header)
}

/// One message from the systemd journal: the program (`SYSLOG_IDENTIFIER`), PID and time
/// (`__REALTIME_TIMESTAMP`, in nanoseconds) come from the journal's fields instead of a syslog
/// header, and `msg` (`MESSAGE`) goes through the same per-program parsers as a log line's
/// message part. Never panics, whatever the bytes.
pub fn parse_message(ident: &[u8], pid: Option<u32>, nanos: i64, msg: &[u8]) -> ParseOutcome {
    let header = Header { nanos, prog: Prog::from_tag(ident), pid, msg: trim_start_spaces(trim_eol(msg)) };
    dispatch(&header)
}

/// The program's message parser, then the event.
fn dispatch(header: &Header<'_>) -> ParseOutcome {
    let found = match header.prog {
        Prog::Sshd => sshd(header.msg),
        Prog::Dropbear => dropbear(header.msg),
        Prog::Sudo => sudo(header.msg),
        Prog::Su => su(header.msg),
        Prog::Other => return ParseOutcome::NotAuth,
    };
    match found {
        Ok(Some(f)) => ParseOutcome::Event(build(header, f)),
        Ok(None) => ParseOutcome::NotAuth,
        Err(why) => ParseOutcome::Malformed(why),
    }
}

fn build(h: &Header<'_>, f: Found<'_>) -> Event {
    let kind = if f.success { EventKind::AuthSuccess } else { EventKind::AuthFailure };
    let mut ev = Event::new(kind, Timestamp::from_unix_nanos(h.nanos));
    ev.event.severity = if f.success { severity::INFO } else { severity::LOW };
    ev.event.dataset = Some(DATASET.to_string());
    ev.event.module = Some(MODULE.to_string());
    ev.process = Some(Process {
        pid: h.pid,
        name: Some(h.prog.name().to_string()),
        command_line: f.command.map(|c| clean(c, MAX_MESSAGE)),
        ..Process::default()
    });
    if let Some(u) = f.user {
        ev.user = Some(User { name: Some(clean(u, MAX_USER)), id: None });
    }
    if let Some(ip) = f.ip {
        ev.source = Some(Endpoint { ip: Some(ip_text(ip)), port: f.port, ..Endpoint::default() });
    }
    ev.event.action = Some(f.method.action());
    ev.message = Some(clean(h.msg, MAX_MESSAGE));
    ev
}

/// `bytes` as event text: see [`push_clean`]. Nearly every real log field is printable ASCII
/// that fits: that is one check and one copy, with no per-character work.
fn clean(bytes: &[u8], max: usize) -> String {
    if bytes.len() <= max
        && is_printable_ascii(bytes)
        && let Ok(s) = std::str::from_utf8(bytes)
    {
        return s.to_owned();
    }
    clean_slow(bytes, max)
}

/// The general path of [`clean`], also what the fast path is tested against.
fn clean_slow(bytes: &[u8], max: usize) -> String {
    let mut s = String::with_capacity(bytes.len().min(max));
    push_clean(&mut s, bytes, max);
    s
}

/// Every byte in `0x20..=0x7e`: ASCII with no control character, so [`push_clean`] would copy it
/// unchanged. Eight bytes at a time (SWAR): no byte has its top bit set, none is below 0x20,
/// none is 0x7f.
fn is_printable_ascii(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let x = u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
        // With no top bit set, a byte below n borrows into its own top bit when n is subtracted
        // from every byte, and only then (the "has less than" test); 0x7f is the zero of x ^ 0x7f.
        let del = x ^ (0x7f * ONES);
        if (x & HIGH) != 0
            || (x.wrapping_sub(0x20 * ONES) & !x & HIGH) != 0
            || (del.wrapping_sub(ONES) & !del & HIGH) != 0
        {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b.wrapping_sub(0x20) < 0x5f)
}

/// Append `bytes` as text, at most `max` bytes of it: invalid UTF-8 and control characters
/// become U+FFFD, so a log line cannot smuggle terminal escapes or newlines into an event.
fn push_clean(out: &mut String, bytes: &[u8], max: usize) {
    let limit = out.len() + max;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            let c = if c.is_control() { char::REPLACEMENT_CHARACTER } else { c };
            if out.len() + c.len_utf8() > limit {
                return;
            }
            out.push(c);
        }
        if !chunk.invalid().is_empty() {
            if out.len() + 3 > limit {
                return;
            }
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

/// `ip` as `IpAddr`'s `Display` writes it; IPv4 (most sources) without the formatting machinery.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut s = String::with_capacity(15);
    for (i, &o) in v4.octets().iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if o >= 100 {
            s.push(char::from(b'0' + o / 100));
        }
        if o >= 10 {
            s.push(char::from(b'0' + o / 10 % 10));
        }
        s.push(char::from(b'0' + o % 10));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Header: timestamp, program, pid.

#[derive(Debug)]
struct Header<'a> {
    nanos: i64,
    prog: Prog,
    pid: Option<u32>,
    msg: &'a [u8],
}

const NANOS_PER_SEC: i64 = 1_000_000_000;
const NANOS_PER_DAY: i64 = 86_400 * NANOS_PER_SEC;

/// `Ok(None)`: a syslog line without a program tag (`last message repeated ...`).
fn parse_header(line: &[u8], year: YearHint) -> Result<Option<Header<'_>>, &'static str> {
    let mut s = line;
    if s.first() == Some(&b'<') {
        let end = memchr(b'>', &s[..s.len().min(5)]).ok_or("bad syslog priority")?;
        if end < 2 || !s[1..end].iter().all(u8::is_ascii_digit) {
            return Err("bad syslog priority");
        }
        s = &s[end + 1..];
        if let Some(rest) = s.strip_prefix(b"1 ") {
            return rfc5424(rest).map(Some);
        }
    }
    let (nanos, rest) = if s.first().is_some_and(u8::is_ascii_digit) {
        let sp = memchr(b' ', s).ok_or("no message after timestamp")?;
        (iso_timestamp(&s[..sp]).ok_or("bad timestamp")?, &s[sp..])
    } else {
        classic_timestamp(s, year).ok_or("no timestamp")?
    };
    // Then `host tag:`, `tag:` (no host), or busybox's `host facility.level tag:`.
    let mut rest = rest;
    for _ in 0..3 {
        rest = rest.strip_prefix(b" ").ok_or("bad header")?;
        let end = memchr(b' ', rest).unwrap_or(rest.len());
        let token = &rest[..end];
        if let Some((prog, pid)) = tag(token) {
            // sudo pads the user name with spaces; no message starts with one on purpose.
            let msg = trim_start_spaces(&rest[end..]);
            return Ok(Some(Header { nanos, prog, pid, msg }));
        }
        if end == rest.len() {
            break;
        }
        rest = &rest[end..];
    }
    Ok(None)
}

/// `name[pid]:` or `name:`.
fn tag(token: &[u8]) -> Option<(Prog, Option<u32>)> {
    let t = token.strip_suffix(b":")?;
    let (name, pid) = match t.strip_suffix(b"]") {
        Some(t) => {
            let open = memchr::memrchr(b'[', t)?;
            (&t[..open], Some(parse_u32(&t[open + 1..])?))
        }
        None => (t, None),
    };
    if name.is_empty() || !name.iter().all(|&b| b.is_ascii_graphic() && b != b'[' && b != b']') {
        return None;
    }
    Some((Prog::from_tag(name), pid))
}

/// `TIMESTAMP HOST APP PROCID MSGID SD [MSG]` after `<pri>1 `.
fn rfc5424(s: &[u8]) -> Result<Header<'_>, &'static str> {
    let mut fields = [&b""[..]; 5];
    let mut rest = s;
    for f in &mut fields {
        let end = memchr(b' ', rest).ok_or("short RFC 5424 header")?;
        *f = &rest[..end];
        rest = &rest[end + 1..];
    }
    let [ts, _host, app, procid, _msgid] = fields;
    let nanos = iso_timestamp(ts).ok_or("bad RFC 5424 timestamp")?;
    // Structured data: `-` or one or more `[id k="v" ...]`, `\]` escaped inside values.
    let msg = if let Some(r) = rest.strip_prefix(b"-") {
        r
    } else {
        let mut i = 0;
        while rest.get(i) == Some(&b'[') {
            let mut in_quotes = false;
            i += 1;
            loop {
                match rest.get(i) {
                    None => return Err("unterminated RFC 5424 structured data"),
                    Some(b'\\') if in_quotes => i += 1,
                    Some(b'"') => in_quotes = !in_quotes,
                    Some(b']') if !in_quotes => break,
                    Some(_) => {}
                }
                i += 1;
            }
            i += 1;
        }
        if i == 0 {
            return Err("bad RFC 5424 structured data");
        }
        &rest[i..]
    };
    let msg = msg.strip_prefix(b" ").unwrap_or(msg);
    let msg = msg.strip_prefix("\u{feff}".as_bytes()).unwrap_or(msg);
    let pid = if procid == b"-" { None } else { parse_u32(procid) };
    Ok(Header { nanos, prog: if app == b"-" { Prog::Other } else { Prog::from_tag(app) }, pid, msg })
}

/// `2026-11-23T19:37:00[.frac](Z|+hh:mm|-hh:mm)`.
fn iso_timestamp(s: &[u8]) -> Option<i64> {
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || (s[10] != b'T' && s[10] != b't') {
        return None;
    }
    let y = i64::from(num(&s[0..4])?);
    let mo = num(&s[5..7])?;
    let d = num(&s[8..10])?;
    let (secs, rest) = hms(&s[11..])?;
    let (frac, rest) = fraction(rest);
    let offset = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = i64::from(num(&[*h1, *h2])?);
            let m = i64::from(num(&[*m1, *m2])?);
            let o = (h * 60 + m) * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d)?;
    Some(((days * 86_400 + secs - offset) * NANOS_PER_SEC) + frac)
}

/// `[Www ]Mmm dd hh:mm:ss[.frac][ yyyy]`; returns nanos and the rest (starting at the space).
/// The year-after-time form is OpenWrt `logread`'s and is only taken after a weekday.
fn classic_timestamp(s: &[u8], year: YearHint) -> Option<(i64, &[u8])> {
    let (s, weekday) = match s.get(..4) {
        Some([a, b, c, b' ']) if is_weekday([*a, *b, *c]) => (&s[4..], true),
        _ => (s, false),
    };
    if s.len() < 15 || s[3] != b' ' || s[6] != b' ' {
        return None;
    }
    let mo = month(&s[..3])?;
    let d = match &s[4..6] {
        [b' ', d] if d.is_ascii_digit() => u32::from(d - b'0'),
        two => num(two)?,
    };
    let (secs, rest) = hms(&s[7..])?;
    let (frac, mut rest) = fraction(rest);
    let mut y = year.year_for(mo);
    if weekday
        && rest.len() >= 5
        && rest[0] == b' '
        && rest.get(5).is_none_or(|&b| b == b' ')
        && let Some(explicit) = num(&rest[1..5])
    {
        y = i64::from(explicit);
        rest = &rest[5..];
    }
    let days = days_from_civil(y, mo, d)?;
    Some(((days * 86_400 + secs) * NANOS_PER_SEC + frac, rest))
}

/// `hh:mm:ss` at the start; seconds of the day and the rest.
fn hms(s: &[u8]) -> Option<(i64, &[u8])> {
    if s.len() < 8 || s[2] != b':' || s[5] != b':' {
        return None;
    }
    let h = num(&s[0..2])?;
    let m = num(&s[3..5])?;
    let sec = num(&s[6..8])?;
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some((i64::from(h * 3600 + m * 60 + sec), &s[8..]))
}

/// `.ddd...` (any number of digits, nanoseconds kept) at the start, if there.
fn fraction(s: &[u8]) -> (i64, &[u8]) {
    let Some(r) = s.strip_prefix(b".") else { return (0, s) };
    let n = r.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut ns = 0i64;
    for (i, &b) in r[..n].iter().enumerate() {
        if i < 9 {
            ns = ns * 10 + i64::from(b - b'0');
        }
    }
    for _ in n..9 {
        ns *= 10;
    }
    (ns, &r[n..])
}

fn is_weekday(s: [u8; 3]) -> bool {
    matches!(&s, b"Mon" | b"Tue" | b"Wed" | b"Thu" | b"Fri" | b"Sat" | b"Sun")
}

fn month(s: &[u8]) -> Option<u32> {
    Some(match s {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    })
}

/// All-digit, non-empty, fits u32.
fn num(s: &[u8]) -> Option<u32> {
    parse_u32(s)
}

fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    u32::try_from(n).ok()
}

fn parse_port(s: &[u8]) -> Option<u16> {
    if s.len() > 5 {
        return None;
    }
    u16::try_from(parse_u32(s)?).ok()
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm); `None` for an impossible date.
fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, u32::try_from(m).unwrap_or(1), u32::try_from(d).unwrap_or(1))
}

// ---------------------------------------------------------------------------------------------
// Addresses.

/// A literal IPv4 or IPv6 address (IPv4-mapped IPv6 unmapped, a `%zone` dropped). Host names
/// are refused: only an address sshd or the kernel wrote is a source.
fn parse_ip(s: &[u8]) -> Option<IpAddr> {
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let s = memchr(b'%', s).map_or(s, |i| &s[..i]);
    if memchr(b':', s).is_none() {
        return parse_ipv4(s).map(IpAddr::V4);
    }
    let text = std::str::from_utf8(s).ok()?;
    match text.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)),
        v4 => Some(v4),
    }
}

/// A dotted quad exactly as `Ipv4Addr`'s parser takes it (four octets of one to three digits,
/// each at most 255, no leading zero), without its general machinery: most sources are IPv4.
fn parse_ipv4(s: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, o) in octets.iter_mut().enumerate() {
        if n > 0 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut v = 0u32;
        while i - start < 3 && s.get(i).is_some_and(u8::is_ascii_digit) {
            v = v * 10 + u32::from(s[i] - b'0');
            i += 1;
        }
        if i == start || (i - start > 1 && s[start] == b'0') {
            return None;
        }
        *o = u8::try_from(v).ok()?;
    }
    (i == s.len()).then(|| std::net::Ipv4Addr::from(octets))
}

/// Dropbear's `addrstring`: `ip:port`, `[ip6]:port`, or an IPv6 address and port joined by
/// the last colon.
fn parse_hostport(s: &[u8]) -> Option<(IpAddr, Option<u16>)> {
    if let Some(r) = s.strip_prefix(b"[") {
        let close = memchr(b']', r)?;
        let ip = parse_ip(&r[..close])?;
        let port = match &r[close + 1..] {
            [] => None,
            [b':', p @ ..] => Some(parse_port(p)?),
            _ => return None,
        };
        return Some((ip, port));
    }
    let colon = memchr::memrchr(b':', s)?;
    Some((parse_ip(&s[..colon])?, Some(parse_port(&s[colon + 1..])?)))
}

/// `<ip> port <n>` at the start of `s`; the rest after it.
fn ip_port(s: &[u8]) -> Option<(IpAddr, u16, &[u8])> {
    let sp = memchr(b' ', s)?;
    let ip = parse_ip(&s[..sp])?;
    let r = s[sp..].strip_prefix(b" port ")?;
    let n = r.iter().take_while(|b| b.is_ascii_digit()).count();
    Some((ip, parse_port(&r[..n])?, &r[n..]))
}

// ---------------------------------------------------------------------------------------------
// sshd.

fn sshd(msg: &[u8]) -> MsgResult<'_> {
    if let Some(r) = msg.strip_prefix(b"Failed ") {
        return sshd_userauth(r, false);
    }
    if let Some(r) = msg.strip_prefix(b"Accepted ") {
        return sshd_userauth(r, true);
    }
    if let Some(r) = msg.strip_prefix(b"Invalid user ") {
        return sshd_invalid_user(r).map(Some);
    }
    let m = msg.strip_prefix(b"error: ").unwrap_or(msg);
    if let Some(r) = m.strip_prefix(b"maximum authentication attempts exceeded for ") {
        let (user, ip, port) = sshd_user_from(r, false)?;
        return Ok(Some(Found::failure(Method::MaxAttempts).user(user).addr(ip, Some(port))));
    }
    if let Some(r) = m.strip_prefix(b"PAM: Authentication failure for ") {
        return Ok(Some(sshd_pam_error(r)));
    }
    for prefix in [&b"Connection closed by "[..], b"Disconnected from ", b"Connection reset by "] {
        if let Some(r) = msg.strip_prefix(prefix) {
            return Ok(sshd_preauth_disconnect(r));
        }
    }
    pam(msg)
}

/// After `Failed ` / `Accepted `: `<method> for [invalid user ]<user> from <ip> port <n> ssh2[: <key>]`.
fn sshd_userauth(r: &[u8], success: bool) -> MsgResult<'_> {
    let Some(sp) = memchr(b' ', r) else { return Ok(None) };
    let method = &r[..sp];
    let Some(rest) = r[sp..].strip_prefix(b" for ") else { return Ok(None) };
    if method.is_empty() || !method.iter().all(|&b| b.is_ascii_alphanumeric() || b"-/@._".contains(&b)) {
        return Ok(None);
    }
    let (user, ip, port) = sshd_user_from(rest, true)?;
    let f = Found::new(success, Method::Ssh(method)).user(user).addr(ip, Some(port));
    Ok(Some(f))
}

/// `[invalid user ]<user> from <ip> port <n> ssh2<tail>`, parsed from the trusted end: every
/// ` from ` is tried, and only one may be followed by an address, `port`, a number, `ssh2` and
/// a tail sshd writes itself (nothing, ` [preauth]`, or `: <key type> <fingerprint>`, only when
/// `key_tail`). The user name is whatever lies before that one.
fn sshd_user_from(rest: &[u8], key_tail: bool) -> Result<(&[u8], IpAddr, u16), &'static str> {
    let mut found = None;
    for pos in memmem::rfind_iter(rest, b" from ") {
        let Some((ip, port, tail)) = ip_port(&rest[pos + 6..]) else { continue };
        let Some(tail) = tail.strip_prefix(b" ssh2") else { continue };
        let ok = tail.is_empty()
            || tail == b" [preauth]"
            || (key_tail && tail.strip_prefix(b": ").is_some_and(key_info));
        if !ok {
            continue;
        }
        if found.is_some() {
            // Possible only with a certificate whose ID and the user name both carry the form.
            return Err("ambiguous source address");
        }
        found = Some((pos, ip, port));
    }
    let (pos, ip, port) = found.ok_or("no source address")?;
    let user = &rest[..pos];
    Ok((user.strip_prefix(b"invalid user ").unwrap_or(user), ip, port))
}

/// sshd's key description after `ssh2: `: `TYPE FP`, or a certificate's
/// `TYPE-CERT FP ID <id> (serial N) CA TYPE FP`, optionally followed by ` [preauth]`.
fn key_info(s: &[u8]) -> bool {
    let s = s.strip_suffix(b" [preauth]").unwrap_or(s);
    let Some((ty, rest)) = split_space(s) else { return false };
    if !key_type(ty) {
        return false;
    }
    let (fp, rest) = split_space(rest).unwrap_or((rest, &b""[..]));
    if !fingerprint(fp) {
        return false;
    }
    if rest.is_empty() {
        return true;
    }
    // A certificate: the ID is free text; what sshd adds after it is checked from the end.
    let Some(rest) = rest.strip_prefix(b"ID ") else { return false };
    let mut parts = rest.rsplitn(4, |&b| b == b' ');
    let (Some(ca_fp), Some(ca_ty), Some(b"CA"), Some(head)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    fingerprint(ca_fp)
        && key_type(ca_ty)
        && head.ends_with(b")")
        && memmem::find(head, b" (serial ").is_some()
}

fn split_space(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = memchr(b' ', s)?;
    Some((&s[..i], &s[i + 1..]))
}

fn key_type(s: &[u8]) -> bool {
    !s.is_empty() && s.len() < 64 && s.iter().all(|&b| b.is_ascii_alphanumeric() || b"-@._".contains(&b))
}

fn fingerprint(s: &[u8]) -> bool {
    let body = s.strip_prefix(b"SHA256:").or_else(|| s.strip_prefix(b"MD5:"));
    body.is_some_and(|b| {
        !b.is_empty() && b.iter().all(|&c| c.is_ascii_alphanumeric() || b"+/=:".contains(&c))
    })
}

/// After `Invalid user `: `<user> from <ip>[ port <n>][ [preauth]]`.
fn sshd_invalid_user(r: &[u8]) -> Result<Found<'_>, &'static str> {
    // The rightmost ` from ` is sshd's own: nothing after it comes from the client.
    let pos = memmem::rfind(r, b" from ").ok_or("no source address")?;
    let after = &r[pos + 6..];
    let after = after.strip_suffix(b" [preauth]").unwrap_or(after);
    let (ip, port) = match memmem::find(after, b" port ") {
        Some(i) => (parse_ip(&after[..i]), parse_port(&after[i + 6..]).map(Some)),
        None => (parse_ip(after), Some(None)),
    };
    match (ip, port) {
        (Some(ip), Some(port)) => Ok(Found::failure(Method::InvalidUser).user(&r[..pos]).addr(ip, port)),
        _ => Err("no source address"),
    }
}

/// After `error: PAM: Authentication failure for `: `[illegal user ]<user> from <host>`. The
/// host is the last word (sshd writes it); a name rather than an address gives no source.
fn sshd_pam_error(r: &[u8]) -> Found<'_> {
    let r = r.strip_suffix(b" [preauth]").unwrap_or(r);
    let mut f = Found::failure(Method::Pam);
    match memmem::rfind(r, b" from ") {
        Some(pos) => {
            let user = &r[..pos];
            f = f.user(user.strip_prefix(b"illegal user ").unwrap_or(user));
            if let Some(ip) = parse_ip(&r[pos + 6..]) {
                f = f.addr(ip, None);
            }
        }
        None => f = f.user(r),
    }
    f
}

/// After `Connection closed by ` etc.: `(authenticating|invalid) user <user> <ip> port <n> [preauth]`.
/// Without a user (a client that never asked for one) it is not an authentication event.
fn sshd_preauth_disconnect(r: &[u8]) -> Option<Found<'_>> {
    let r = r.strip_suffix(b" [preauth]")?;
    let p = memmem::rfind(r, b" port ")?;
    let port = parse_port(&r[p + 6..])?;
    let head = &r[..p];
    let sp = memchr::memrchr(b' ', head)?;
    let ip = parse_ip(&head[sp + 1..])?;
    let who = &head[..sp + 1];
    let user = who.strip_prefix(b"authenticating user ").or_else(|| who.strip_prefix(b"invalid user "))?;
    let user = user.strip_suffix(b" ")?;
    Some(Found::failure(Method::PreauthDisconnect).user(user).addr(ip, Some(port)))
}

/// `pam_unix(<service>:auth): authentication failure; logname=.. uid=.. euid=.. tty=.. ruser=..
/// rhost=<host>  user=<user>`. Everything before `user=` is written by PAM from trusted values;
/// the user name is last, so the first `rhost=` after `ruser=` is the real one.
fn pam(msg: &[u8]) -> MsgResult<'_> {
    let Some(r) = msg.strip_prefix(b"pam_unix(") else { return Ok(None) };
    let Some(close) = memchr(b')', r) else { return Ok(None) };
    if !r[..close].ends_with(b":auth") {
        return Ok(None);
    }
    let Some(r) = r[close..].strip_prefix(b"): authentication failure; ") else { return Ok(None) };
    let mut f = Found::failure(Method::Pam);
    let after_ruser = memmem::find(r, b" ruser=").map_or(r, |i| &r[i..]);
    if let Some(i) = memmem::find(after_ruser, b" rhost=") {
        let v = &after_ruser[i + 7..];
        let end = memchr(b' ', v).unwrap_or(v.len());
        if let Some(ip) = parse_ip(&v[..end]) {
            f = f.addr(ip, None);
        }
        if let Some(u) = memmem::find(&v[end..], b" user=") {
            f = f.user(trim_end_spaces(&v[end + u + 6..]));
        }
    }
    Ok(Some(f))
}

// ---------------------------------------------------------------------------------------------
// dropbear.

fn dropbear(msg: &[u8]) -> MsgResult<'_> {
    if let Some(r) = msg.strip_prefix(b"Bad password attempt for '") {
        return dropbear_quoted(r, Found::failure(Method::Password)).map(Some);
    }
    if let Some(r) = msg.strip_prefix(b"Password auth succeeded for '") {
        return dropbear_quoted(r, Found::success(Method::Password)).map(Some);
    }
    if let Some(r) = msg.strip_prefix(b"Login attempt for nonexistent user") {
        if let Some(r) = r.strip_prefix(b" '") {
            return dropbear_quoted(r, Found::failure(Method::InvalidUser)).map(Some);
        }
        // dropbear 2022.83 (Debian 12) names neither the user nor the peer: nothing to attribute.
        if r.is_empty() {
            return Ok(None);
        }
        let addr = r.strip_prefix(b" from ").ok_or("no source address")?;
        let (ip, port) = parse_hostport(addr).ok_or("no source address")?;
        return Ok(Some(Found::failure(Method::InvalidUser).addr(ip, port)));
    }
    if let Some(r) = msg.strip_prefix(b"Pubkey auth succeeded for '") {
        return dropbear_pubkey(r, Found::success(Method::Publickey)).map(Some);
    }
    if let Some(r) = msg.strip_prefix(b"Pubkey auth bad signature for '") {
        return dropbear_pubkey(r, Found::failure(Method::Publickey)).map(Some);
    }
    if let Some(r) = msg.strip_prefix(b"Max auth tries reached - user '") {
        return dropbear_quoted(r, Found::failure(Method::MaxAttempts)).map(Some);
    }
    if let Some(r) = msg.strip_prefix(b"Exit before auth from <") {
        return dropbear_exit_before_auth(r);
    }
    pam(msg)
}

/// `<user>' from <addr>`: the address is after the last ` from `, the user between the quotes.
fn dropbear_quoted<'a>(r: &'a [u8], f: Found<'a>) -> Result<Found<'a>, &'static str> {
    let pos = memmem::rfind(r, b" from ").ok_or("no source address")?;
    let (ip, port) = parse_hostport(&r[pos + 6..]).ok_or("no source address")?;
    let user = r[..pos].strip_suffix(b"'").ok_or("unquoted user name")?;
    Ok(dropbear_user(f, user).addr(ip, port))
}

/// dropbear writes `'is invalid'` for a user it does not know in `Max auth tries reached`.
fn dropbear_user<'a>(f: Found<'a>, user: &'a [u8]) -> Found<'a> {
    if user == b"is invalid" { f } else { f.user(user) }
}

/// `<user>' with [<type> ]key <fp> from <addr>`.
fn dropbear_pubkey<'a>(r: &'a [u8], f: Found<'a>) -> Result<Found<'a>, &'static str> {
    let pos = memmem::rfind(r, b" from ").ok_or("no source address")?;
    let (ip, port) = parse_hostport(&r[pos + 6..]).ok_or("no source address")?;
    let head = &r[..pos];
    let q = memmem::rfind(head, b"' with ").ok_or("unquoted user name")?;
    Ok(f.user(&head[..q]).addr(ip, port))
}

/// After `Exit before auth from <`: `<addr>>: [(user '<user>', N fails): ]<why>`. The address
/// and the user (a passwd entry's name) come first and are dropbear's own; the reason may quote
/// the client. With a user this is an abandoned or exhausted login (a failure); without one the
/// client never tried to log in (a scan): not an auth event.
fn dropbear_exit_before_auth(r: &[u8]) -> MsgResult<'_> {
    let close = memchr(b'>', r).ok_or("no source address")?;
    let (ip, port) = parse_hostport(&r[..close]).ok_or("no source address")?;
    let Some(rest) = r[close..].strip_prefix(b">: (user '") else {
        // dropbear 2022.83 ends an unknown user's exhausted login without the `(user ...)` part.
        let max = r[close..].starts_with(b">: Max auth tries reached - user 'is invalid'");
        return Ok(max.then(|| Found::failure(Method::MaxAttempts).addr(ip, port)));
    };
    let Some(q) = memmem::find(rest, b"', ") else { return Ok(None) };
    let why = memmem::find(&rest[q..], b" fails): ").map_or(&b""[..], |i| &rest[q + i + 9..]);
    let method = if why.starts_with(b"Max auth tries reached") {
        Method::MaxAttempts
    } else {
        Method::PreauthDisconnect
    };
    Ok(Some(dropbear_user(Found::failure(method), &rest[..q]).addr(ip, port)))
}

// ---------------------------------------------------------------------------------------------
// sudo and su.

/// `<user> : <N> incorrect password attempt(s) ; TTY=.. ; PWD=.. ; USER=.. ; COMMAND=..`,
/// `<user> : TTY=.. ; ... ; COMMAND=..` (a command run), `<user> : user NOT in sudoers ; ...`.
/// The invoking user comes first and is a passwd name (no ` : `); PWD and COMMAND are the
/// user's own text.
fn sudo(msg: &[u8]) -> MsgResult<'_> {
    if msg.starts_with(b"pam_unix(") {
        return pam(msg);
    }
    let m = trim_start_spaces(msg);
    let Some(sep) = memmem::find(m, b" : ") else { return Ok(None) };
    let user = &m[..sep];
    if user.is_empty() || memchr(b' ', user).is_some() {
        return Ok(None);
    }
    let rest = &m[sep + 3..];
    let command = memmem::find(rest, b" ; COMMAND=").map(|i| &rest[i + 11..]);
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let f = if digits > 0 && rest[digits..].starts_with(b" incorrect password attempt") {
        Found::failure(Method::Password)
    } else if rest.starts_with(b"TTY=") || rest.starts_with(b"HOST=") || rest.starts_with(b"PWD=") {
        Found::success(Method::Command)
    } else if rest.starts_with(b"user NOT in sudoers")
        || rest.starts_with(b"command not allowed")
        || rest.starts_with(b"user NOT authorized on host")
    {
        Found::failure(Method::NotAllowed)
    } else {
        return Ok(None);
    };
    let mut f = f.user(user);
    f.command = command;
    Ok(Some(f))
}

/// `FAILED SU (to <target>) <user> on <tty>`, `(to <target>) <user> on <tty>`,
/// `Successful su for <target> by <user>`. `user.name` is the target: the account whose
/// password was asked for, as with sshd and PAM.
fn su(msg: &[u8]) -> MsgResult<'_> {
    if msg.starts_with(b"pam_unix(") {
        return pam(msg);
    }
    if let Some(r) = msg.strip_prefix(b"FAILED SU (to ") {
        return Ok(su_to(r).map(|t| Found::failure(Method::Su).user(t)));
    }
    if let Some(r) = msg.strip_prefix(b"(to ") {
        return Ok(su_to(r).map(|t| Found::success(Method::Su).user(t)));
    }
    if let Some(r) = msg.strip_prefix(b"Successful su for ") {
        let Some(by) = memmem::rfind(r, b" by ") else { return Ok(None) };
        return Ok(Some(Found::success(Method::Su).user(&r[..by])));
    }
    Ok(None)
}

/// `<target>) <user> on <tty>`: tty and invoking user are taken from the end, the rest is the
/// target.
fn su_to(r: &[u8]) -> Option<&[u8]> {
    let on = memmem::rfind(r, b" on ")?;
    let head = &r[..on];
    let sp = memchr::memrchr(b' ', head)?;
    head[..sp].strip_suffix(b")")
}

// ---------------------------------------------------------------------------------------------

fn trim_eol(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = s {
        s = rest;
    }
    s
}

fn trim_start_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    s
}

fn trim_end_spaces(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' '] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_checks_every_byte_in_every_position() {
        for len in 0..20 {
            let ok = vec![b'a'; len];
            assert!(is_printable_ascii(&ok));
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut v = ok.clone();
                    v[pos] = b;
                    assert_eq!(is_printable_ascii(&v), (0x20..0x7f).contains(&b), "{b:#x} at {pos} of {len}");
                }
            }
        }
    }

    proptest::proptest! {
        /// The fast path of `clean` gives exactly what the character-by-character path gives.
        #[test]
        fn clean_fast_path_agrees_with_the_slow_path(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            ascii in proptest::collection::vec(0x1fu8..=0x7f, 0..600),
            max in 0usize..600,
        ) {
            for b in [&bytes, &ascii] {
                let fast = clean(b, max);
                proptest::prop_assert_eq!(&fast, &clean_slow(b, max));
                proptest::prop_assert!(fast.len() <= max);
                proptest::prop_assert!(!fast.chars().any(char::is_control));
            }
        }

        /// The IPv4 fast path takes exactly what the standard parser takes.
        #[test]
        fn ipv4_fast_path_agrees_with_std(
            s in "[0-9.]{0,20}",
            parts in proptest::collection::vec(0u32..1000, 1..6),
            zeros in proptest::collection::vec(0usize..2, 5),
        ) {
            let built = parts
                .iter()
                .zip(&zeros)
                .map(|(p, z)| format!("{}{p}", "0".repeat(*z)))
                .collect::<Vec<_>>()
                .join(".");
            for t in [s, built] {
                proptest::prop_assert_eq!(parse_ipv4(t.as_bytes()), t.parse::<std::net::Ipv4Addr>().ok(), "{}", t);
            }
        }

        #[test]
        fn ip_text_is_display(a: u32, b: u128) {
            let v4 = IpAddr::V4(std::net::Ipv4Addr::from(a));
            proptest::prop_assert_eq!(ip_text(v4), v4.to_string());
            let v6 = IpAddr::V6(std::net::Ipv6Addr::from(b));
            proptest::prop_assert_eq!(ip_text(v6), v6.to_string());
        }
    }

    #[test]
    fn clean_edges() {
        assert_eq!(clean(b"root", 256), "root");
        assert_eq!(clean(b"ro\x1bot", 256), "ro\u{fffd}ot");
        assert_eq!(clean(b"a\x7fb", 256), "a\u{fffd}b");
        assert_eq!(clean(b"a\xffb", 256), "a\u{fffd}b");
        assert_eq!(clean(b"abcdef", 4), "abcd");
        assert_eq!(clean("\u{85}x".as_bytes(), 8), "\u{fffd}x", "C1 control");
        assert_eq!(clean("h\u{e9}".as_bytes(), 8), "h\u{e9}");
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-1000, 0, 1, 59, 365, 10_000, 20_000, 20_780] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), Some(days));
        }
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
    }

    #[test]
    fn iso_timestamps_honour_their_offset() {
        let a = iso_timestamp(b"2026-11-23T19:37:00.001920+00:00").unwrap();
        let b = iso_timestamp(b"2026-11-23T20:37:00.001920+01:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a % NANOS_PER_SEC, 1_920_000);
        assert!(iso_timestamp(b"2026-11-23T19:37:00").is_none(), "no zone");
    }

    #[test]
    fn year_hint_rolls_december_back_in_january() {
        let jan = YearHint::new(2027, 1);
        assert_eq!(jan.year_for(12), 2026);
        assert_eq!(jan.year_for(1), 2027);
        let ts = Timestamp::from_unix_nanos(iso_timestamp(b"2027-01-02T00:00:00Z").unwrap());
        assert_eq!(YearHint::from_timestamp(ts), jan);
    }
}
