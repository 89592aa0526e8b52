//! A small YAML document tree where every node knows its line and column.
//!
//! Built from `saphyr-parser` events so that every policy error (an unknown key, a bad duration,
//! a field that does not exist, a syntax error deep inside a `when:` expression) can point at the
//! exact place in the file. Anchors and aliases are refused: policies are read by humans, and a
//! rule that silently borrows a condition from elsewhere is harder to review.

use saphyr_parser::{Event, Marker, Parser, ScalarStyle};

/// A place in a file: 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

#[derive(Clone, Debug)]
pub(crate) enum NodeKind {
    Scalar { text: String, style: ScalarStyle },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub pos: Pos,
    /// Character index of the node's first character in the source.
    pub index: usize,
    pub kind: NodeKind,
}

fn pos_of(m: &Marker) -> Pos {
    Pos {
        line: u32::try_from(m.line()).unwrap_or(u32::MAX),
        col: u32::try_from(m.col().saturating_add(1)).unwrap_or(u32::MAX),
    }
}

/// Parse one YAML document. An empty document is `Ok(None)`.
pub(crate) fn parse(src: &str) -> Result<Option<Node>, (Pos, String)> {
    enum Open {
        Seq(Node),
        Map(Node, Option<Node>),
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    for item in Parser::new_from_str(src) {
        let (ev, span) = item.map_err(|e| (pos_of(e.marker()), e.info().to_string()))?;
        let pos = pos_of(&span.start);
        let index = span.start.index();
        let finished: Option<Node> = match ev {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err((pos, "only one YAML document per file (use a list of rules)".into()));
                }
                None
            }
            Event::Alias(_) => return Err((pos, "YAML aliases are not supported in policies".into())),
            Event::Scalar(text, style, _, _) => {
                Some(Node { pos, index, kind: NodeKind::Scalar { text: text.into_owned(), style } })
            }
            Event::SequenceStart(_, _) => {
                stack.push(Open::Seq(Node { pos, index, kind: NodeKind::Seq(Vec::new()) }));
                None
            }
            Event::MappingStart(_, _) => {
                stack.push(Open::Map(Node { pos, index, kind: NodeKind::Map(Vec::new()) }, None));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Open::Seq(n) | Open::Map(n, _)) => Some(n),
                None => None,
            },
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => None,
        };
        if let Some(node) = finished {
            match stack.last_mut() {
                Some(Open::Seq(Node { kind: NodeKind::Seq(items), .. })) => items.push(node),
                Some(Open::Map(Node { kind: NodeKind::Map(entries), .. }, pending)) => match pending.take() {
                    Some(key) => entries.push((key, node)),
                    None => *pending = Some(node),
                },
                Some(_) => {}
                None => root = Some(node),
            }
        }
    }
    Ok(root)
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A plain scalar that YAML would read as null (`~`, `null`, empty).
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, style: ScalarStyle::Plain }
            if text.is_empty() || text == "~" || text == "null" || text == "Null" || text == "NULL")
    }

    pub fn is_plain(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { style: ScalarStyle::Plain, .. })
    }

    pub fn what(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// Position of the character at `offset` (in characters) inside this scalar's value, mapped
    /// back to the source. Exact for single-line plain and quoted scalars and for block scalars;
    /// for folded or escaped text it finds the same non-blank character, which is what a reader
    /// looks for.
    pub fn locate(&self, src: &str, offset: usize) -> Pos {
        let NodeKind::Scalar { text, style } = &self.kind else { return self.pos };
        let target = text.chars().take(offset).filter(|c| !c.is_whitespace()).count();
        let mut line = self.pos.line;
        let mut col = self.pos.col;
        let mut chars = src.chars().skip(self.index).peekable();
        match style {
            ScalarStyle::Literal | ScalarStyle::Folded if matches!(chars.peek(), Some('|' | '>')) => {
                // The span starts at the `|`/`>` header: skip that line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        col = 1;
                        break;
                    }
                }
            }
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => {
                chars.next();
                col += 1;
            }
            _ => {}
        }
        let mut seen = 0usize;
        let mut last = Pos { line, col };
        for c in chars {
            if c == '\n' {
                line += 1;
                col = 1;
                continue;
            }
            if !c.is_whitespace() {
                last = Pos { line, col };
                if seen == target {
                    return last;
                }
                seen += 1;
            }
            col += 1;
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_carry_line_and_column() {
        let src = "id: x\nwhen: a == \"b\"\nlist:\n  - one\n  - two\n";
        let root = parse(src).unwrap().unwrap();
        let NodeKind::Map(entries) = &root.kind else { panic!() };
        assert_eq!(entries[1].1.pos, Pos { line: 2, col: 7 });
        let NodeKind::Seq(items) = &entries[2].1.kind else { panic!() };
        assert_eq!(items[1].pos, Pos { line: 5, col: 5 });
        assert_eq!(entries[1].1.locate(src, 5), Pos { line: 2, col: 12 });
    }

    #[test]
    fn block_scalar_offsets_map_to_their_lines() {
        let src = "when: >\n  a == 1\n  and b == 2\n";
        let root = parse(src).unwrap().unwrap();
        let NodeKind::Map(entries) = &root.kind else { panic!() };
        let v = &entries[0].1;
        let text = v.as_str().unwrap();
        let off = text.find("b ==").unwrap();
        assert_eq!(v.locate(src, off), Pos { line: 3, col: 7 });
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("a: [1, 2\nb: c\n").unwrap_err();
        assert!(err.0.line >= 1, "{err:?}");
    }
}
