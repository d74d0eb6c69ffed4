//! A TOML document parsed with positions kept, so every key path can be mapped back to a line.
//!
//! The typed model (and figment) forget where a value came from; `toml::Spanned` remembers it. We
//! parse once into a position-carrying tree, use it for the structural check, and keep a
//! `key path -> line` table for the semantic checks that run on typed values later.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

/// A TOML value with the byte spans of every key and value below it.
#[derive(Debug, Clone)]
pub enum Node {
    Table(Vec<(Spanned<String>, Located)>),
    Array(Vec<Located>),
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime,
}

impl Node {
    /// The TOML type name, as a user would say it in an error message.
    pub fn type_name(&self) -> &'static str {
        match self {
            Node::Table(_) => "a table",
            Node::Array(_) => "an array",
            Node::String(_) => "a string",
            Node::Integer(_) => "an integer",
            Node::Float(_) => "a float",
            Node::Boolean(_) => "a boolean",
            Node::Datetime => "a date-time",
        }
    }
}

const DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any TOML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Boolean(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Integer(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        i64::try_from(v)
            .map(Node::Integer)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Located>()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Node, A::Error> {
        table(None, map)
    }
}

/// Reads table entries (the first key may already have been taken by the caller).
fn table<'de, A: MapAccess<'de>>(first: Option<Key>, mut map: A) -> Result<Node, A::Error> {
    let mut entries = Vec::new();
    let mut next = first;
    if next.is_none() {
        next = map.next_key::<Key>()?;
    }
    while let Some(key) = next {
        match key {
            Key::Datetime => {
                let _: String = map.next_value()?;
                return Ok(Node::Datetime);
            }
            Key::Named(key) => {
                let value = map.next_value::<Located>()?;
                entries.push((key, value));
            }
        }
        next = map.next_key::<Key>()?;
    }
    Ok(Node::Table(entries))
}

/// A node and its byte span. Unlike `toml::Spanned`, it also accepts values toml gives no span
/// (dotted-key tables such as `a.b = 1`), which get the empty span `0..0`.
#[derive(Debug, Clone)]
pub struct Located {
    span: std::ops::Range<usize>,
    node: Node,
}

impl Located {
    pub fn span(&self) -> std::ops::Range<usize> {
        self.span.clone()
    }
    pub fn get_ref(&self) -> &Node {
        &self.node
    }
}

impl<'de> Deserialize<'de> for Located {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(
            SPANNED_NAME,
            &[SPANNED_START, SPANNED_END, SPANNED_VALUE],
            LocatedVisitor,
        )
    }
}

struct LocatedVisitor;

fn unspanned<E>(node: Result<Node, E>) -> Result<Located, E> {
    node.map(|node| Located { span: 0..0, node })
}

impl<'de> Visitor<'de> for LocatedVisitor {
    type Value = Located;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any TOML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Located, E> {
        unspanned(NodeVisitor.visit_bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Located, E> {
        unspanned(NodeVisitor.visit_i64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Located, E> {
        unspanned(NodeVisitor.visit_u64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Located, E> {
        unspanned(NodeVisitor.visit_f64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Located, E> {
        unspanned(NodeVisitor.visit_str(v))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Located, E> {
        unspanned(NodeVisitor.visit_string(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Located, A::Error> {
        unspanned(NodeVisitor.visit_seq(seq))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Located, A::Error> {
        let first = map.next_key::<Key>()?;
        let is_spanned = matches!(&first, Some(Key::Named(k)) if k.get_ref() == SPANNED_START);
        if !is_spanned {
            return unspanned(table(first, map));
        }
        let start: usize = map.next_value()?;
        let (mut end, mut node) = (None, None);
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                SPANNED_END => end = Some(map.next_value::<usize>()?),
                SPANNED_VALUE => node = Some(map.next_value::<Node>()?),
                other => return Err(de::Error::unknown_field(other, &[])),
            }
        }
        match (end, node) {
            (Some(end), Some(node)) => Ok(Located {
                span: start..end,
                node,
            }),
            _ => Err(de::Error::custom("value without position")),
        }
    }
}

/// A table key: spanned, except toml's private date-time marker, which cannot be spanned.
enum Key {
    Named(Spanned<String>),
    Datetime,
}

const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(
            SPANNED_NAME,
            &[SPANNED_START, SPANNED_END, SPANNED_VALUE],
            KeyVisitor,
        )
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(if v == DATETIME_KEY {
            Key::Datetime
        } else {
            Key::Named(Spanned::new(0..0, v.to_owned()))
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        let (mut start, mut end, mut value) = (None, None, None);
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                SPANNED_START => start = Some(map.next_value::<usize>()?),
                SPANNED_END => end = Some(map.next_value::<usize>()?),
                SPANNED_VALUE => value = Some(map.next_value::<String>()?),
                other => return Err(de::Error::unknown_field(other, &[])),
            }
        }
        match (start, end, value) {
            (Some(s), Some(e), Some(v)) => Ok(Key::Named(Spanned::new(s..e, v))),
            _ => Err(de::Error::custom("key without position")),
        }
    }
}

/// Line numbers of every key path in one document.
#[derive(Debug, Clone, Default)]
pub struct SpanMap {
    lines: BTreeMap<String, usize>,
}

impl SpanMap {
    /// Whether `path` is written in the file (rather than defaulted or inherited).
    pub fn has(&self, path: &str) -> bool {
        self.lines.contains_key(&normalize_path(path))
    }

    /// Line of `path` (`metric[2].critical.above` or figment's `metric.2.critical.above`), or of
    /// its nearest ancestor that has one, so a defaulted key still points near its table.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = normalize_path(path);
        loop {
            if let Some(line) = self.lines.get(&path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path.truncate(cut);
        }
    }
}

/// Turns figment-style numeric segments (`metric.2.query`) into index form (`metric[2].query`).
pub fn normalize_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for seg in path.split('.') {
        if !out.is_empty() && !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// A parsed document: its tree, and the line of every key.
#[derive(Debug, Clone)]
pub struct Document {
    pub root: Located,
    pub spans: SpanMap,
}

/// A TOML syntax error with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: Option<usize>,
    pub message: String,
}

/// Parses `text`, keeping positions. Never panics on any input.
pub fn parse(text: &str) -> Result<Document, SyntaxError> {
    let root: Located = toml::from_str(text).map_err(|e: toml::de::Error| SyntaxError {
        line: e.span().map(|s| line_at(text, s.start)),
        message: e.message().trim().to_string(),
    })?;
    let mut lines = BTreeMap::new();
    collect(text, "", &root, &mut lines);
    Ok(Document {
        root,
        spans: SpanMap { lines },
    })
}

fn collect(text: &str, path: &str, node: &Located, out: &mut BTreeMap<String, usize>) {
    match node.get_ref() {
        Node::Table(entries) => {
            for (key, value) in entries {
                let child = join_key(path, key.get_ref());
                out.insert(child.clone(), line_at(text, key.span().start));
                collect(text, &child, value, out);
            }
        }
        Node::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let child = format!("{path}[{i}]");
                out.insert(child.clone(), line_at(text, item.span().start));
                collect(text, &child, item, out);
            }
        }
        _ => {}
    }
}

/// Appends a key to a dotted path.
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// 1-based line of a byte offset (clamped to the text, so odd spans never panic).
pub fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_nested_keys_and_table_arrays() {
        let text = "service = \"a\"\n\n[[metric]]\nname = \"x\"\n\n[[metric]]\nname = \"y\"\n[metric.critical]\nabove = 1\n";
        let doc = parse(text).unwrap();
        assert_eq!(doc.spans.line_of("service"), Some(1));
        assert_eq!(doc.spans.line_of("metric[1].name"), Some(7));
        assert_eq!(doc.spans.line_of("metric[1].critical.above"), Some(9));
        assert_eq!(doc.spans.line_of("metric.1.critical.above"), Some(9));
        // a key that is not written falls back to its table
        assert_eq!(
            doc.spans.line_of("metric[0].window"),
            doc.spans.line_of("metric[0]")
        );
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let err = parse("a = 1\nb = \n").unwrap_err();
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn dotted_keys_and_inline_tables_parse() {
        for t in [
            "a.b = 3\n",
            "[x]\na.b = 3\n",
            "a = {b = 3}\n",
            "[a.b]\nc=1\n",
            "a = [{b = 1}]\n",
        ] {
            assert!(parse(t).is_ok(), "{t}");
        }
        let doc = parse("x = 1\n[t]\na.b = 3\n").unwrap();
        assert_eq!(doc.spans.line_of("t.a.b"), Some(3));
    }

    #[test]
    fn datetimes_are_recognised() {
        let doc = parse("a = 1979-05-27T07:32:00Z\n").unwrap();
        let Node::Table(entries) = doc.root.get_ref() else {
            panic!("root is a table")
        };
        assert!(matches!(entries[0].1.get_ref(), Node::Datetime));
    }
}
