//! The condition language: parse an expression string, check it against the rule's event kinds,
//! compile it to a tree of tests over [`Field`] accessors.
//!
//! ```text
//! expr   := and ("or" and)*
//! and    := unary ("and" unary)*
//! unary  := "not" unary | "(" expr ")" | test
//! test   := FIELD "exists"
//!         | FIELD ["not"] OP VALUE
//! OP     := == != < <= > >= in contains startswith endswith glob matches cidr
//! VALUE  := "text" | 'text' | 123 | [VALUE, ...]
//! ```
//!
//! A list after a text operator means "any of": `process.executable startswith ["/tmp/", "/dev/shm/"]`.
//! A test on a list field (`process.args`) holds if it holds for any element. Every test on a
//! missing field is false; `not` (and `!=`) turn that into true.

use std::net::IpAddr;

use picket_event::{Event, EventKind};
use regex::Regex;

use crate::field::{Field, Group, Type, Val, carries, suggest};

/// A compiled condition.
#[derive(Clone, Debug)]
pub enum Cond {
    True,
    Test(Field, Op),
    Not(Box<Cond>),
    And(Box<[Cond]>),
    Or(Box<[Cond]>),
}

/// A compiled test on one field's value.
#[derive(Clone, Debug)]
pub enum Op {
    Exists,
    /// Equal to one value (the common case, kept apart from lists for speed).
    StrEq(Box<str>),
    /// Equal to one of (sorted when long, for a binary search).
    StrIn(Box<[Box<str>]>),
    NumIn(Box<[i64]>),
    NumCmp(Cmp, i64),
    Prefix(Box<[Box<str>]>),
    Suffix(Box<[Box<str>]>),
    Contains(Box<[Box<str>]>),
    /// Globs and regexes both compile to one anchored or unanchored regex.
    Regex(Regex),
    Cidr(Box<[Cidr]>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

/// An IP network: address and prefix length. A bare address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().ok()?;
        let net = unmap(net);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        if len > max {
            return None;
        }
        Some(Cidr { net, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, unmap(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.len)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// `::ffff:1.2.3.4` is the IPv4 address 1.2.3.4 (how dual-stack sockets report v4 peers).
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

const SORTED_FROM: usize = 12;

impl Op {
    #[inline]
    fn test_str(&self, s: &str) -> bool {
        match self {
            Op::StrEq(v) => **v == *s,
            Op::StrIn(set) => {
                if set.len() >= SORTED_FROM {
                    set.binary_search_by(|p| (**p).cmp(s)).is_ok()
                } else {
                    set.iter().any(|p| **p == *s)
                }
            }
            Op::Prefix(ps) => ps.iter().any(|p| s.starts_with(&**p)),
            Op::Suffix(ps) => ps.iter().any(|p| s.ends_with(&**p)),
            Op::Contains(ps) => ps.iter().any(|p| s.contains(&**p)),
            Op::Regex(re) => re.is_match(s),
            Op::Cidr(nets) => match s.parse::<IpAddr>() {
                Ok(ip) => nets.iter().any(|n| n.contains(ip)),
                Err(_) => false,
            },
            Op::Exists => true,
            Op::NumIn(_) | Op::NumCmp(..) => false,
        }
    }

    #[inline]
    fn test_num(&self, n: i64) -> bool {
        match self {
            Op::NumIn(set) => set.contains(&n),
            Op::NumCmp(Cmp::Lt, v) => n < *v,
            Op::NumCmp(Cmp::Le, v) => n <= *v,
            Op::NumCmp(Cmp::Gt, v) => n > *v,
            Op::NumCmp(Cmp::Ge, v) => n >= *v,
            Op::Exists => true,
            _ => false,
        }
    }
}

impl Cond {
    /// Does the event satisfy the condition? Allocates nothing.
    #[inline]
    pub fn eval(&self, ev: &Event) -> bool {
        match self {
            Cond::True => true,
            Cond::Test(field, op) => match field.get(ev) {
                Val::Missing => false,
                Val::Str(s) => op.test_str(s),
                Val::Num(n) => op.test_num(n),
                Val::List(items) => match op {
                    Op::Exists => true,
                    _ => items.iter().any(|s| op.test_str(s)),
                },
            },
            Cond::Not(c) => !c.eval(ev),
            Cond::And(cs) => cs.iter().all(|c| c.eval(ev)),
            Cond::Or(cs) => cs.iter().any(|c| c.eval(ev)),
        }
    }
}

/// An error inside an expression, at a character offset into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprError {
    pub offset: usize,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(i64),
    Sym(&'static str),
    End,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Str(s) => format!("\"{s}\""),
        Tok::Num(n) => n.to_string(),
        Tok::Sym(s) => format!("`{s}`"),
        Tok::End => "the end of the expression".into(),
    }
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&d) = chars.get(i) else {
                    return Err(ExprError { offset: start, message: "unterminated string".into() });
                };
                i += 1;
                if d == c {
                    break;
                }
                if d == '\\' {
                    let Some(&e) = chars.get(i) else {
                        return Err(ExprError { offset: start, message: "unterminated string".into() });
                    };
                    i += 1;
                    match e {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        '\\' | '"' | '\'' => s.push(e),
                        // Keep other escapes for regexes: "\d" stays "\d".
                        other => {
                            s.push('\\');
                            s.push(other);
                        }
                    }
                } else {
                    s.push(d);
                }
            }
            out.push((start, Tok::Str(s)));
        } else if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let n = text.parse::<i64>().map_err(|_| ExprError {
                offset: start,
                message: format!("number `{text}` is out of range"),
            })?;
            out.push((start, Tok::Num(n)));
        } else if c.is_alphabetic() || c == '_' || c == '@' {
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '@')) {
                i += 1;
            }
            out.push((start, Tok::Ident(chars[start..i].iter().collect())));
        } else {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let sym = match two.as_str() {
                "==" => Some("=="),
                "!=" => Some("!="),
                "<=" => Some("<="),
                ">=" => Some(">="),
                _ => None,
            };
            if let Some(s) = sym {
                i += 2;
                out.push((start, Tok::Sym(s)));
                continue;
            }
            let sym = match c {
                '<' => "<",
                '>' => ">",
                '(' => "(",
                ')' => ")",
                '[' => "[",
                ']' => "]",
                ',' => ",",
                '=' => {
                    return Err(ExprError { offset: start, message: "use `==` to compare".into() });
                }
                _ => {
                    return Err(ExprError { offset: start, message: format!("unexpected character `{c}`") });
                }
            };
            i += 1;
            out.push((start, Tok::Sym(sym)));
        }
    }
    out.push((chars.len(), Tok::End));
    Ok(out)
}

#[derive(Clone, Debug)]
enum Value {
    Str(String),
    Num(i64),
}

struct Parser<'k> {
    toks: Vec<(usize, Tok)>,
    at: usize,
    kinds: &'k [EventKind],
    /// Errors that do not stop parsing (unknown field, wrong type): all are reported.
    errors: Vec<ExprError>,
}

const OPERATORS: &str =
    "==, !=, <, <=, >, >=, in, contains, startswith, endswith, glob, matches, cidr, exists";

/// Parse and compile `src`, checking every field against `kinds`.
pub fn compile(src: &str, kinds: &[EventKind]) -> Result<Cond, Vec<ExprError>> {
    let toks = lex(src).map_err(|e| vec![e])?;
    let mut p = Parser { toks, at: 0, kinds, errors: Vec::new() };
    let cond = match p.expr() {
        Ok(c) => c,
        Err(e) => {
            p.errors.push(e);
            return Err(p.errors);
        }
    };
    if !matches!(p.peek(), Tok::End) {
        let (off, t) = p.toks[p.at].clone();
        p.errors.push(ExprError {
            offset: off,
            message: format!("expected `and`, `or` or the end, found {}", describe(&t)),
        });
    }
    if p.errors.is_empty() { Ok(cond) } else { Err(p.errors) }
}

/// Check a bare field path (for `by:` and action targets) against `kinds`.
pub fn check_field(path: &str, kinds: &[EventKind]) -> Result<(Field, Type), String> {
    let Some((field, ty, group)) = Field::parse(path) else {
        return Err(unknown_field(path));
    };
    check_group(path, group, kinds)?;
    Ok((field, ty))
}

fn unknown_field(path: &str) -> String {
    match suggest(path) {
        Some(s) => format!("unknown field `{path}` (did you mean `{s}`?)"),
        None => format!("unknown field `{path}`"),
    }
}

fn check_group(path: &str, group: Group, kinds: &[EventKind]) -> Result<(), String> {
    match kinds.iter().find(|k| !carries(**k, group)) {
        Some(k) => Err(format!("field `{path}` is never present on `{k}` events")),
        None => Ok(()),
    }
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].1
    }

    fn offset(&self) -> usize {
        self.toks[self.at].0
    }

    fn bump(&mut self) -> (usize, Tok) {
        let t = self.toks[self.at].clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == w)
    }

    fn expected(&self, what: &str) -> ExprError {
        ExprError {
            offset: self.offset(),
            message: format!("expected {what}, found {}", describe(self.peek())),
        }
    }

    fn expr(&mut self) -> Result<Cond, ExprError> {
        let mut parts = vec![self.and()?];
        while self.is_word("or") {
            self.bump();
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap_or(Cond::True)
        } else {
            Cond::Or(parts.into_boxed_slice())
        })
    }

    fn and(&mut self) -> Result<Cond, ExprError> {
        let mut parts = vec![self.unary()?];
        while self.is_word("and") {
            self.bump();
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap_or(Cond::True)
        } else {
            Cond::And(parts.into_boxed_slice())
        })
    }

    fn unary(&mut self) -> Result<Cond, ExprError> {
        if self.is_word("not") {
            self.bump();
            return Ok(Cond::Not(Box::new(self.unary()?)));
        }
        if matches!(self.peek(), Tok::Sym("(")) {
            self.bump();
            let c = self.expr()?;
            if !matches!(self.peek(), Tok::Sym(")")) {
                return Err(self.expected("`)`"));
            }
            self.bump();
            return Ok(c);
        }
        self.test()
    }

    fn test(&mut self) -> Result<Cond, ExprError> {
        let (field_at, tok) = self.bump();
        let Tok::Ident(path) = tok else {
            return Err(ExprError {
                offset: field_at,
                message: format!("expected a field name, `not` or `(`, found {}", describe(&tok)),
            });
        };
        if matches!(path.as_str(), "and" | "or" | "in" | "exists") {
            return Err(ExprError {
                offset: field_at,
                message: format!("expected a field name, found `{path}`"),
            });
        }
        let resolved = match Field::parse(&path) {
            Some((f, t, g)) => {
                if let Err(m) = check_group(&path, g, self.kinds) {
                    self.errors.push(ExprError { offset: field_at, message: m });
                }
                Some((f, t))
            }
            None => {
                self.errors.push(ExprError { offset: field_at, message: unknown_field(&path) });
                None
            }
        };
        if self.is_word("exists") {
            self.bump();
            return Ok(resolved.map_or(Cond::True, |(f, _)| Cond::Test(f, Op::Exists)));
        }
        let negate = self.is_word("not");
        if negate {
            self.bump();
        }
        let op_at = self.offset();
        let op: &'static str = match self.peek() {
            Tok::Sym(s @ ("==" | "!=" | "<" | "<=" | ">" | ">=")) if !negate => s,
            Tok::Ident(w) => match w.as_str() {
                "in" => "in",
                "contains" => "contains",
                "startswith" => "startswith",
                "endswith" => "endswith",
                "glob" => "glob",
                "matches" => "matches",
                "cidr" => "cidr",
                _ => return Err(self.expected(&format!("an operator ({OPERATORS})"))),
            },
            _ => return Err(self.expected(&format!("an operator ({OPERATORS})"))),
        };
        self.bump();
        let value_at = self.offset();
        let values = self.value()?;
        let Some((field, ty)) = resolved else { return Ok(Cond::True) };
        match build(field, ty, op, values) {
            Ok(c) => {
                let c = if negate || op == "!=" { Cond::Not(Box::new(c)) } else { c };
                Ok(c)
            }
            Err((at_value, m)) => {
                self.errors.push(ExprError { offset: if at_value { value_at } else { op_at }, message: m });
                Ok(Cond::True)
            }
        }
    }

    fn scalar(&mut self) -> Result<Value, ExprError> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.bump();
                Ok(Value::Str(s))
            }
            Tok::Num(n) => {
                self.bump();
                Ok(Value::Num(n))
            }
            _ => Err(self.expected("a value (\"text\", a number or a [list])")),
        }
    }

    fn value(&mut self) -> Result<Vec<Value>, ExprError> {
        if !matches!(self.peek(), Tok::Sym("[")) {
            return Ok(vec![self.scalar()?]);
        }
        self.bump();
        let mut out = Vec::new();
        if matches!(self.peek(), Tok::Sym("]")) {
            return Err(self.expected("a value: a list may not be empty"));
        }
        loop {
            out.push(self.scalar()?);
            match self.peek() {
                Tok::Sym(",") => {
                    self.bump();
                    // A trailing comma is fine.
                    if matches!(self.peek(), Tok::Sym("]")) {
                        self.bump();
                        return Ok(out);
                    }
                }
                Tok::Sym("]") => {
                    self.bump();
                    return Ok(out);
                }
                _ => return Err(self.expected("`,` or `]`")),
            }
        }
    }
}

/// Build one test. `Err((true, m))` points at the value, `Err((false, m))` at the operator.
fn build(field: Field, ty: Type, op: &str, values: Vec<Value>) -> Result<Cond, (bool, String)> {
    let path = field.path();
    let many = values.len() > 1;
    if many && matches!(op, "==" | "!=" | "<" | "<=" | ">" | ">=") {
        return Err((true, format!("`{op}` takes one value; use `in` for a list")));
    }
    let strings = || -> Result<Vec<String>, (bool, String)> {
        values
            .iter()
            .map(|v| match v {
                Value::Str(s) => Ok(s.clone()),
                Value::Num(n) => {
                    Err((true, format!("`{path}` is {}: write the value as text (\"{n}\")", ty.name())))
                }
            })
            .collect()
    };
    let boxed = |v: Vec<String>| -> Box<[Box<str>]> { v.into_iter().map(String::into_boxed_str).collect() };
    let op = match (op, ty) {
        ("==" | "!=" | "in", Type::Num) => {
            let nums = values
                .iter()
                .map(|v| match v {
                    Value::Num(n) => Ok(*n),
                    Value::Str(s) => Err((true, format!("`{path}` is a number: write {s} without quotes"))),
                })
                .collect::<Result<Vec<i64>, _>>()?;
            Op::NumIn(nums.into_boxed_slice())
        }
        ("==" | "!=" | "in", _) => {
            let mut v = strings()?;
            if v.len() >= SORTED_FROM {
                v.sort();
                v.dedup();
            }
            match v.len() {
                1 => Op::StrEq(v.pop().unwrap_or_default().into_boxed_str()),
                _ => Op::StrIn(boxed(v)),
            }
        }
        ("<" | "<=" | ">" | ">=", Type::Num) => {
            let n = match values.first() {
                Some(Value::Num(n)) => *n,
                _ => return Err((true, format!("`{op}` compares numbers: write a number"))),
            };
            let cmp = match op {
                "<" => Cmp::Lt,
                "<=" => Cmp::Le,
                ">" => Cmp::Gt,
                _ => Cmp::Ge,
            };
            Op::NumCmp(cmp, n)
        }
        ("<" | "<=" | ">" | ">=", _) => {
            return Err((false, format!("`{op}` compares numbers, and `{path}` is {}", ty.name())));
        }
        (_, Type::Num) => return Err((false, format!("`{op}` works on text, and `{path}` is a number"))),
        ("cidr", t) if !t.is_ip() => {
            return Err((false, format!("`cidr` works on IP address fields, and `{path}` is {}", t.name())));
        }
        ("cidr", _) => {
            let nets = strings()?
                .iter()
                .map(|s| {
                    Cidr::parse(s).ok_or((true, format!("`{s}` is not an IP network (like \"10.0.0.0/8\")")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Op::Cidr(nets.into_boxed_slice())
        }
        ("startswith", _) => Op::Prefix(boxed(strings()?)),
        ("endswith", _) => Op::Suffix(boxed(strings()?)),
        ("contains", _) => Op::Contains(boxed(strings()?)),
        ("glob", _) => glob(&strings()?).map_err(|m| (true, m))?,
        ("matches", _) => {
            let pats = strings()?;
            let joined = if pats.len() == 1 {
                pats[0].clone()
            } else {
                pats.iter().map(|p| format!("(?:{p})")).collect::<Vec<_>>().join("|")
            };
            Op::Regex(regex(&joined)?)
        }
        _ => return Err((false, format!("unknown operator `{op}`"))),
    };
    Ok(Cond::Test(field, op))
}

fn regex(pattern: &str) -> Result<Regex, (bool, String)> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| (true, format!("bad regular expression: {}", e.to_string().replace('\n', " "))))
}

/// Globs: `*` is any run of characters (including `/`), `?` is one character. The common shapes
/// compile to plain string tests; the rest to one anchored regex.
fn glob(pats: &[String]) -> Result<Op, String> {
    let simple = |p: &str| !p.contains('?') && !p.contains('\\');
    let inner_star_free = |p: &str| !p.contains('*');
    if pats.iter().all(|p| simple(p)) {
        if pats.iter().all(|p| p.ends_with('*') && !p.starts_with('*') && inner_star_free(&p[..p.len() - 1]))
        {
            return Ok(Op::Prefix(pats.iter().map(|p| p[..p.len() - 1].into()).collect()));
        }
        if pats.iter().all(|p| p.starts_with('*') && !p.ends_with('*') && inner_star_free(&p[1..])) {
            return Ok(Op::Suffix(pats.iter().map(|p| p[1..].into()).collect()));
        }
        if pats.iter().all(|p| {
            p.len() >= 2 && p.starts_with('*') && p.ends_with('*') && inner_star_free(&p[1..p.len() - 1])
        }) {
            return Ok(Op::Contains(pats.iter().map(|p| p[1..p.len() - 1].into()).collect()));
        }
        if pats.iter().all(|p| inner_star_free(p)) {
            return Ok(Op::StrIn(pats.iter().map(|p| p.as_str().into()).collect()));
        }
    }
    let mut re = String::from("(?s)^(?:");
    for (i, p) in pats.iter().enumerate() {
        if i > 0 {
            re.push('|');
        }
        let mut lit = String::new();
        let mut chars = p.chars();
        while let Some(c) = chars.next() {
            match c {
                '*' | '?' => {
                    re.push_str(&regex::escape(&lit));
                    lit.clear();
                    re.push_str(if c == '*' { ".*" } else { "." });
                }
                '\\' => lit.push(chars.next().unwrap_or('\\')),
                c => lit.push(c),
            }
        }
        re.push_str(&regex::escape(&lit));
    }
    re.push_str(")$");
    regex(&re).map(Op::Regex).map_err(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matches_v4_v6_and_mapped_addresses() {
        let n = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        let z = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(z.contains("1.2.3.4".parse().unwrap()));
        let v6 = Cidr::parse("fe80::/10").unwrap();
        assert!(v6.contains("fe80::1".parse().unwrap()));
        assert!(!v6.contains("2001:db8::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }

    #[test]
    fn glob_shapes_compile_to_string_tests() {
        assert!(matches!(glob(&["/tmp/*".into()]).unwrap(), Op::Prefix(_)));
        assert!(matches!(glob(&["*.sh".into()]).unwrap(), Op::Suffix(_)));
        assert!(matches!(glob(&["*nc*".into()]).unwrap(), Op::Contains(_)));
        assert!(matches!(glob(&["/tmp/*/x?".into()]).unwrap(), Op::Regex(_)));
    }
}
