//! Per event kind, which rules an event can possibly match — without evaluating them one by one.
//!
//! Most events match no rule, so the no-match path is what sets throughput. A rule whose `when`
//! is (or is an `and` containing) one of these tests on a single-valued text field is *indexed*:
//!
//! - `field == "x"` / `field in [...]`: a hash map from value to rules — one lookup per field;
//! - `field startswith [...]`: a hash map keyed by the first *n* bytes (n = the shortest prefix
//!   for that field) — one lookup per field;
//! - `field matches "..."` (and globs that compile to a regex): one alternation of all of the
//!   field's patterns gates them — one regex pass per field instead of one per rule.
//!
//! An indexed rule becomes a candidate only when its test could hold; candidates are then
//! evaluated in full, so the index only prunes and never changes a result. Other rules are
//! evaluated for every event of the kind.

use std::collections::HashMap;

use picket_event::{Event, EventKind};
use regex::Regex;

use crate::compile::{Rule, kind_bit};
use crate::expr::{Cond, Op};
use crate::field::{Field, Type, Val};

type Map<K> = HashMap<K, Box<[usize]>, foldhash::fast::RandomState>;

/// Rules keyed by the first `len` bytes of their prefixes.
#[derive(Clone, Debug)]
struct PrefixIndex {
    field: Field,
    len: usize,
    map: Map<Box<[u8]>>,
}

/// One alternation of several rules' patterns on one field.
#[derive(Clone, Debug)]
struct RegexGate {
    field: Field,
    gate: Regex,
    rules: Box<[usize]>,
}

/// While building: per field, what to index.
type PerField<T> = Vec<(Field, T)>;

/// Longest prefix key: longer keys buy nothing and cost hashing.
const MAX_PREFIX_KEY: usize = 16;

#[derive(Clone, Debug, Default)]
pub(crate) struct KindIndex {
    /// Every rule for this kind, in load order.
    pub rules: Box<[usize]>,
    /// Bitset (over all rules) of the rules evaluated for every event of this kind.
    always: Box<[u64]>,
    eq: Box<[(Field, Map<Box<str>>)]>,
    prefix: Box<[PrefixIndex]>,
    regex: Box<[RegexGate]>,
}

enum Key<'a> {
    Eq(Field, &'a [Box<str>]),
    Prefix(Field, &'a [Box<str>]),
    Regex(Field, &'a Regex),
}

fn indexable(f: Field) -> bool {
    matches!(f.ty(), Type::Str | Type::Ip)
}

/// The best indexable conjunct of a rule's `when`: equality first, then prefix, then regex.
fn key(c: &Cond) -> Option<Key<'_>> {
    let parts: &[Cond] = match c {
        Cond::And(parts) => parts,
        c => std::slice::from_ref(c),
    };
    let eq = parts.iter().find_map(|c| match c {
        Cond::Test(f, Op::StrEq(v)) if indexable(*f) => Some(Key::Eq(*f, std::slice::from_ref(v))),
        Cond::Test(f, Op::StrIn(vs)) if indexable(*f) => Some(Key::Eq(*f, vs)),
        _ => None,
    });
    let prefix = || {
        parts.iter().find_map(|c| match c {
            Cond::Test(f, Op::Prefix(ps)) if indexable(*f) && ps.iter().all(|p| !p.is_empty()) => {
                Some(Key::Prefix(*f, ps))
            }
            _ => None,
        })
    };
    let regex = || {
        parts.iter().find_map(|c| match c {
            Cond::Test(f, Op::Regex(re)) if indexable(*f) => Some(Key::Regex(*f, re)),
            _ => None,
        })
    };
    eq.or_else(prefix).or_else(regex)
}

fn slot<T>(v: &mut Vec<(Field, T)>, f: Field, make: impl FnOnce() -> T) -> usize {
    match v.iter().position(|(g, _)| *g == f) {
        Some(p) => p,
        None => {
            v.push((f, make()));
            v.len() - 1
        }
    }
}

fn push(list: &mut Vec<usize>, i: usize) {
    if list.last() != Some(&i) {
        list.push(i);
    }
}

fn set(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

impl KindIndex {
    pub fn build(rules: &[Rule], kind: EventKind, words: usize) -> KindIndex {
        let mine: Vec<usize> = (0..rules.len()).filter(|&i| rules[i].kinds & kind_bit(kind) != 0).collect();
        let mut always = vec![0u64; words];
        let mut eq: PerField<HashMap<Box<str>, Vec<usize>>> = Vec::new();
        let mut prefix: PerField<Vec<(Box<str>, usize)>> = Vec::new();
        let mut regex: PerField<Vec<(String, usize)>> = Vec::new();
        for &i in &mine {
            match key(&rules[i].when) {
                Some(Key::Eq(f, values)) => {
                    let s = slot(&mut eq, f, HashMap::new);
                    for v in values {
                        push(eq[s].1.entry(v.clone()).or_default(), i);
                    }
                }
                Some(Key::Prefix(f, ps)) => {
                    let s = slot(&mut prefix, f, Vec::new);
                    prefix[s].1.extend(ps.iter().map(|p| (p.clone(), i)));
                }
                Some(Key::Regex(f, re)) => {
                    let s = slot(&mut regex, f, Vec::new);
                    regex[s].1.push((re.as_str().to_string(), i));
                }
                None => set(&mut always, i),
            }
        }
        let eq = eq
            .into_iter()
            .map(|(f, m)| (f, m.into_iter().map(|(k, v)| (k, v.into_boxed_slice())).collect()))
            .collect();
        let prefix = prefix
            .into_iter()
            .map(|(f, ps)| {
                let n = ps.iter().map(|(p, _)| p.len()).min().unwrap_or(1).min(MAX_PREFIX_KEY);
                let mut m: HashMap<Box<[u8]>, Vec<usize>> = HashMap::new();
                for (p, i) in ps {
                    push(m.entry(p.as_bytes()[..n].into()).or_default(), i);
                }
                PrefixIndex {
                    field: f,
                    len: n,
                    map: m.into_iter().map(|(k, v)| (k, v.into_boxed_slice())).collect(),
                }
            })
            .collect();
        let mut gates = Vec::new();
        for (f, pats) in regex {
            let union = pats.iter().map(|(p, _)| format!("(?:{p})")).collect::<Vec<_>>().join("|");
            let rules_of: Vec<usize> = pats.iter().map(|(_, i)| *i).collect();
            match regex::RegexBuilder::new(&union).size_limit(16 << 20).build() {
                Ok(gate) => gates.push(RegexGate { field: f, gate, rules: rules_of.into_boxed_slice() }),
                // Too big to combine: evaluate those rules one by one.
                Err(_) => rules_of.iter().for_each(|&i| set(&mut always, i)),
            }
        }
        KindIndex {
            rules: mine.into_boxed_slice(),
            always: always.into_boxed_slice(),
            eq,
            prefix,
            regex: gates.into_boxed_slice(),
        }
    }

    /// Fill `bits` with the rules this event could match. Allocates nothing.
    #[inline]
    pub fn candidates(&self, ev: &Event, bits: &mut [u64]) {
        bits.copy_from_slice(&self.always);
        for (field, map) in &self.eq {
            if let Val::Str(v) = field.get(ev)
                && let Some(rules) = map.get(v)
            {
                rules.iter().for_each(|&r| set(bits, r));
            }
        }
        for PrefixIndex { field, len, map } in &self.prefix {
            if let Val::Str(v) = field.get(ev)
                && let Some(head) = v.as_bytes().get(..*len)
                && let Some(rules) = map.get(head)
            {
                rules.iter().for_each(|&r| set(bits, r));
            }
        }
        for RegexGate { field, gate, rules } in &self.regex {
            if let Val::Str(v) = field.get(ev)
                && gate.is_match(v)
            {
                rules.iter().for_each(|&r| set(bits, r));
            }
        }
    }
}
