//! Path globs for deny rules: `*` and `?` within one path segment, `**` for any number of
//! segments. Small on purpose (no regex engine in the exec path); matching is O(pattern × path).

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::error::HostError;

/// A compiled path glob, e.g. `/tmp/**`, `/dev/shm/**`, `**/evil`, `/usr/bin/nc*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `**`: zero or more whole segments.
    AnyDepth,
    /// A segment pattern with `*` and `?`.
    Pattern(Vec<u8>),
}

impl Glob {
    /// Compiles `pattern`. It must be absolute (`/...`) or start with `**/`.
    ///
    /// # Errors
    /// [`HostError::BadRule`] for a relative or empty pattern, or `**` inside a segment.
    pub fn new(pattern: &str) -> Result<Glob, HostError> {
        let bad = |detail: &str| HostError::BadRule { rule: pattern.to_string(), detail: detail.to_string() };
        let body = if let Some(rest) = pattern.strip_prefix('/') {
            rest
        } else if pattern == "**" || pattern.starts_with("**/") {
            pattern
        } else {
            return Err(bad("a path glob must start with `/` or `**/`"));
        };
        let mut segments = Vec::new();
        for seg in body.split('/') {
            if seg.is_empty() {
                continue;
            }
            if seg == "**" {
                if segments.last() != Some(&Segment::AnyDepth) {
                    segments.push(Segment::AnyDepth);
                }
            } else if seg.contains("**") {
                return Err(bad("`**` must be a whole path segment"));
            } else {
                segments.push(Segment::Pattern(seg.as_bytes().to_vec()));
            }
        }
        if segments.is_empty() {
            return Err(bad("empty pattern"));
        }
        Ok(Glob { text: pattern.to_string(), segments })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the absolute `path` matches.
    pub fn matches(&self, path: &Path) -> bool {
        let parts: Vec<&[u8]> =
            path.as_os_str().as_bytes().split(|b| *b == b'/').filter(|s| !s.is_empty()).collect();
        // reach[j]: pattern segments 0..i can consume path segments 0..j.
        let mut reach = vec![false; parts.len() + 1];
        reach[0] = true;
        for seg in &self.segments {
            let mut next = vec![false; parts.len() + 1];
            match seg {
                Segment::AnyDepth => {
                    let mut seen = false;
                    for j in 0..=parts.len() {
                        seen |= reach[j];
                        next[j] = seen;
                    }
                }
                Segment::Pattern(p) => {
                    for j in 0..parts.len() {
                        if reach[j] && segment_matches(p, parts[j]) {
                            next[j + 1] = true;
                        }
                    }
                }
            }
            reach = next;
        }
        reach[parts.len()]
    }
}

impl std::fmt::Display for Glob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// `*` and `?` wildcard match of one segment, greedy with one backtrack point.
fn segment_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        Glob::new(pattern).unwrap().matches(Path::new(path))
    }

    #[test]
    fn double_star_matches_any_depth_including_zero() {
        assert!(m("/tmp/**", "/tmp/x"));
        assert!(m("/tmp/**", "/tmp/a/b/c"));
        assert!(m("/tmp/**", "/tmp"));
        assert!(!m("/tmp/**", "/tmpfoo/x"));
        assert!(!m("/tmp/**", "/var/tmp/x"));
        assert!(m("**/evil", "/a/b/evil"));
        assert!(m("**/evil", "/evil"));
        assert!(!m("**/evil", "/a/evil2"));
        assert!(m("/a/**/c", "/a/c"));
        assert!(m("/a/**/c", "/a/b/b/c"));
        assert!(!m("/a/**/c", "/a/b/d"));
    }

    #[test]
    fn single_star_and_question_mark_stay_within_a_segment() {
        assert!(m("/usr/bin/nc*", "/usr/bin/ncat"));
        assert!(!m("/usr/bin/*", "/usr/bin/x/y"));
        assert!(m("/dev/shm/?", "/dev/shm/a"));
        assert!(!m("/dev/shm/?", "/dev/shm/ab"));
        assert!(m("/x/*a*b*", "/x/zzazzbzz"));
        assert!(!m("/x/*a*b", "/x/zzazzbzz"));
    }

    #[test]
    fn relative_or_malformed_patterns_are_rejected() {
        assert!(Glob::new("tmp/**").is_err());
        assert!(Glob::new("").is_err());
        assert!(Glob::new("/").is_err());
        assert!(Glob::new("/tmp/a**").is_err());
    }
}
