//! Bounded line reading over any [`BufRead`] with no allocation per line: `picket replay
//! --format auth-log` and the journal input read their lines through [`for_each_line`]. (The file
//! tailer assembles lines from its own `pread` buffer the same way.)

use std::io::{self, BufRead};
use std::ops::ControlFlow;

use memchr::memchr;

/// One line handed on by [`for_each_line`], without its `\n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Complete(&'a [u8]),
    /// A line longer than the limit: skipped up to its newline, only counted.
    TooLong,
}

/// Call `f` with every line of `r` until the end or until `f` breaks. A line whose newline is
/// already in `r`'s buffer is handed on in place (no copy); one that spans refills is put
/// together in a single reused buffer of at most `max` bytes; a longer one is skipped to its
/// newline and reported once as [`Line::TooLong`], so memory stays bounded whatever the input.
/// A last line without a newline is a line.
pub fn for_each_line<R: BufRead + ?Sized>(
    r: &mut R,
    max: usize,
    mut f: impl FnMut(Line<'_>) -> ControlFlow<()>,
) -> io::Result<()> {
    let mut partial: Vec<u8> = Vec::new();
    // Inside a line: `partial` holds its start, or `too_long` says it is being skipped.
    let mut inside = false;
    let mut too_long = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            if inside {
                let line = if too_long { Line::TooLong } else { Line::Complete(&partial) };
                let _ = f(line);
            }
            return Ok(());
        }
        let mut used = 0;
        let mut stop = false;
        while used < avail.len() {
            let rest = &avail[used..];
            let Some(n) = memchr(b'\n', rest) else {
                if !too_long {
                    if partial.len() + rest.len() > max {
                        too_long = true;
                        partial = Vec::new();
                    } else {
                        partial.extend_from_slice(rest);
                    }
                }
                inside = true;
                used = avail.len();
                break;
            };
            let piece = &rest[..n];
            let flow = if too_long || partial.len() + piece.len() > max {
                partial.clear();
                f(Line::TooLong)
            } else if inside {
                partial.extend_from_slice(piece);
                let flow = f(Line::Complete(&partial));
                partial.clear();
                flow
            } else {
                f(Line::Complete(piece))
            };
            inside = false;
            too_long = false;
            used += n + 1;
            if flow.is_break() {
                stop = true;
                break;
            }
        }
        r.consume(used);
        if stop {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(data: &[u8], cap: usize, max: usize) -> Vec<String> {
        let mut r = io::BufReader::with_capacity(cap, data);
        let mut got = Vec::new();
        for_each_line(&mut r, max, |l| {
            got.push(match l {
                Line::Complete(b) => String::from_utf8_lossy(b).into_owned(),
                Line::TooLong => "<too long>".into(),
            });
            ControlFlow::Continue(())
        })
        .unwrap();
        got
    }

    #[test]
    fn lines_across_refills_and_over_long_ones() {
        let data = b"ab\ncdefgh\n\nxyzxyzxyzxyz\nlast";
        for cap in [1, 2, 3, 5, 8, 64] {
            assert_eq!(
                collect(data, cap, 8),
                vec!["ab", "cdefgh", "", "<too long>", "last"],
                "buffer capacity {cap}"
            );
        }
        assert_eq!(collect(b"", 4, 8), Vec::<String>::new());
        assert_eq!(collect(b"x\n", 4, 8), vec!["x"]);
        assert_eq!(collect(b"0123456789", 4, 8), vec!["<too long>"]);
        assert_eq!(collect(b"01234567\n", 4, 8), vec!["01234567"]);
    }

    #[test]
    fn a_break_stops_reading() {
        let mut r = io::BufReader::new(&b"a\nb\nc\n"[..]);
        let mut n = 0;
        for_each_line(&mut r, 8, |_| {
            n += 1;
            if n == 2 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })
        .unwrap();
        assert_eq!(n, 2);
    }
}
