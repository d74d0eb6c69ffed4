//! A structural check of a TOML document against a static schema, reporting every mistake.
//!
//! serde (and figment on top of it) stops at the first error. Users want the whole list, so the
//! loaders run this check first: unknown keys (with a "did you mean"), wrong types, unparsable
//! durations and enum values, and missing required keys, each with its line.

use super::spans::{join_key, line_at, Document, Located, Node};
use super::Problem;
use std::path::Path;

/// The expected shape of a value.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    Str,
    /// A finite number (integers accepted).
    Float,
    /// A non-negative integer.
    Count,
    Bool,
    /// A humantime duration string such as `30s` or `1h30m`.
    Duration,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    Table(&'static [Field]),
    /// `[[name]]` entries, each a table with these fields.
    TableArray(&'static [Field]),
    /// A table of string values with free keys (`vars`).
    StrMap,
    /// A table of tables with free keys (`[templates.<name>]`).
    TableMap(&'static [Field]),
    /// An array of strings (`notify = ["oncall", "pagerduty"]`).
    StrList,
}

/// One allowed key.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub shape: Shape,
    pub required: bool,
}

impl Field {
    pub const fn req(name: &'static str, shape: Shape) -> Self {
        Field {
            name,
            shape,
            required: true,
        }
    }
    pub const fn opt(name: &'static str, shape: Shape) -> Self {
        Field {
            name,
            shape,
            required: false,
        }
    }
}

/// Checks `doc` (whose root must be a table) against `fields`; returns every problem found.
pub fn check(file: &Path, text: &str, doc: &Document, fields: &[Field]) -> Vec<Problem> {
    let mut out = Vec::new();
    let ctx = Ctx { file, text };
    ctx.table("", &doc.root, fields, &mut out);
    out
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> Option<usize> {
        // Keys synthesised without a position have an empty span at 0.
        (span != (0..0)).then(|| line_at(self.text, span.start))
    }

    fn table(&self, path: &str, node: &Located, fields: &[Field], out: &mut Vec<Problem>) {
        let Node::Table(entries) = node.get_ref() else {
            return;
        };
        for (key, value) in entries {
            let child = join_key(path, key.get_ref());
            match fields.iter().find(|f| f.name == key.get_ref()) {
                Some(field) => self.value(&child, value, field.shape, out),
                None => {
                    let known: Vec<&str> = fields.iter().map(|f| f.name).collect();
                    let hint = match closest(key.get_ref(), &known) {
                        Some(s) => {
                            format!("did you mean `{s}`? allowed here: {}", known.join(", "))
                        }
                        None if known.is_empty() => "remove it".to_string(),
                        None => format!("remove it; allowed here: {}", known.join(", ")),
                    };
                    out.push(
                        Problem::new(self.file, child, "unknown key")
                            .at(self.line(key.span()))
                            .hint(hint),
                    );
                }
            }
        }
        for field in fields.iter().filter(|f| f.required) {
            if !entries.iter().any(|(k, _)| k.get_ref() == field.name) {
                let where_ = if path.is_empty() {
                    "at the top of the file".to_string()
                } else {
                    format!("in `{path}`")
                };
                out.push(
                    Problem::new(
                        self.file,
                        join_key(path, field.name),
                        "missing required key",
                    )
                    .at(self.line(node.span()).filter(|_| !path.is_empty()))
                    .hint(format!("add `{}` {where_}", field.name)),
                );
            }
        }
    }

    fn value(&self, path: &str, node: &Located, shape: Shape, out: &mut Vec<Problem>) {
        let line = self.line(node.span());
        let wrong = |expected: &str| {
            Problem::new(
                self.file,
                path,
                format!("expected {expected}, found {}", node.get_ref().type_name()),
            )
            .at(line)
        };
        match (shape, node.get_ref()) {
            (Shape::Str, Node::String(_)) | (Shape::Bool, Node::Boolean(_)) => {}
            (Shape::Str, _) => out.push(wrong("a string").hint("quote the value: key = \"...\"")),
            (Shape::Bool, _) => out.push(wrong("a boolean").hint("write true or false")),
            (Shape::Float, Node::Integer(_)) => {}
            (Shape::Float, Node::Float(v)) if v.is_finite() => {}
            (Shape::Float, Node::Float(_)) => out.push(
                Problem::new(self.file, path, "not a finite number")
                    .at(line)
                    .hint("write a plain number such as 0.05"),
            ),
            (Shape::Float, _) => out.push(wrong("a number").hint("write a number such as 0.05")),
            (Shape::Count, Node::Integer(v)) if *v >= 0 => {}
            (Shape::Count, _) => {
                out.push(wrong("a non-negative integer").hint("write a whole number such as 10"))
            }
            (Shape::Duration, Node::String(s)) => {
                if let Err(e) = humantime::parse_duration(s) {
                    out.push(
                        Problem::new(self.file, path, format!("bad duration {s:?}: {e}"))
                            .at(line)
                            .hint("write a duration such as \"30s\", \"5m\" or \"1h30m\""),
                    );
                }
            }
            (Shape::Duration, _) => out.push(
                wrong("a duration string")
                    .hint("write a quoted duration such as \"30s\", \"5m\" or \"1h30m\""),
            ),
            (Shape::Enum(allowed), Node::String(s)) => {
                if !allowed.contains(&s.as_str()) {
                    out.push(
                        Problem::new(self.file, path, format!("unknown value {s:?}"))
                            .at(line)
                            .hint(format!("use one of: {}", allowed.join(", "))),
                    );
                }
            }
            (Shape::Enum(allowed), _) => out.push(
                wrong("a string").hint(format!("use one of (quoted): {}", allowed.join(", "))),
            ),
            (Shape::Table(fields), Node::Table(_)) => self.table(path, node, fields, out),
            (Shape::Table(_), _) => {
                out.push(wrong("a table").hint(format!("write it as a [{path}] table")))
            }
            (Shape::TableArray(fields), Node::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let child = format!("{path}[{i}]");
                    if matches!(item.get_ref(), Node::Table(_)) {
                        self.table(&child, item, fields, out);
                    } else {
                        out.push(
                            Problem::new(
                                self.file,
                                child,
                                format!("expected a table, found {}", item.get_ref().type_name()),
                            )
                            .at(self.line(item.span()))
                            .hint(format!("write each entry as a [[{path}]] table")),
                        );
                    }
                }
            }
            (Shape::TableArray(_), _) => {
                out.push(wrong("an array of tables").hint(format!("write entries as [[{path}]]")))
            }
            (Shape::StrMap, Node::Table(entries)) => {
                for (k, v) in entries {
                    self.value(&join_key(path, k.get_ref()), v, Shape::Str, out);
                }
            }
            (Shape::StrMap, _) => out.push(
                wrong("a table of strings")
                    .hint(format!("write [{path}] with name = \"value\" lines")),
            ),
            (Shape::TableMap(fields), Node::Table(entries)) => {
                for (k, v) in entries {
                    self.value(&join_key(path, k.get_ref()), v, Shape::Table(fields), out);
                }
            }
            (Shape::TableMap(_), _) => out
                .push(wrong("a table of tables").hint(format!("write entries as [{path}.<name>]"))),
            (Shape::StrList, Node::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    self.value(&format!("{path}[{i}]"), item, Shape::Str, out);
                }
            }
            (Shape::StrList, _) => out
                .push(wrong("an array of strings").hint("write it as [\"a\", \"b\"]".to_string())),
        }
    }
}

/// The allowed key closest to a misspelt one, if it is close enough to be a typo.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::spans::parse;

    const INNER: &[Field] = &[Field::req("above", Shape::Float)];
    const ROOT: &[Field] = &[
        Field::req("name", Shape::Str),
        Field::opt("every", Shape::Duration),
        Field::opt("mode", Shape::Enum(&["hold", "fail"])),
        Field::opt("level", Shape::Table(INNER)),
    ];

    fn run(text: &str) -> Vec<Problem> {
        let doc = parse(text).unwrap();
        check(Path::new("f.toml"), text, &doc, ROOT)
    }

    #[test]
    fn reports_every_mistake_with_lines() {
        let p =
            run("nmae = \"x\"\nevery = \"5 parsecs\"\nmode = \"maybe\"\n[level]\nabove = \"hi\"\n");
        let keys: Vec<_> = p.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert!(keys.contains(&("nmae", Some(1))), "{p:?}");
        assert!(keys.contains(&("every", Some(2))), "{p:?}");
        assert!(keys.contains(&("mode", Some(3))), "{p:?}");
        assert!(keys.contains(&("level.above", Some(5))), "{p:?}");
        assert!(keys.contains(&("name", None)), "{p:?}");
        let typo = p.iter().find(|p| p.key == "nmae").unwrap();
        assert!(typo.hint.contains("did you mean `name`"), "{}", typo.hint);
    }

    #[test]
    fn accepts_a_correct_document() {
        assert!(run("name = \"x\"\nevery = \"1m\"\nmode = \"hold\"\nlevel.above = 3\n").is_empty());
    }
}
