//! A TOML document as a tree in which every key and value keeps its span.
//!
//! The policy is first read into this loose form and then checked key by key,
//! so that every problem (unknown key, wrong type, bad value) is reported, not
//! only the first one a typed deserializer would stop at.
use std::{fmt, ops::Range, sync::OnceLock};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub span: Range<usize>,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    String(String),
    Integer(i64),
    Float,
    Boolean(bool),
    Datetime,
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    pub key_span: Range<usize>,
    pub node: Node,
}

impl Value {
    /// "a string", "an integer", ...: for "must be X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime => "a date-time",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

/// Marker toml uses for date-times when deserialized as "any".
const DATETIME_FIELD: &str = "$__toml_private_datetime";

/// Stands for a span toml did not provide (implicit tables, dotted keys);
/// filled in from the nearest enclosing span after parsing.
const NO_SPAN: Range<usize> = usize::MAX..usize::MAX;

/// Parses a document into its root table.
pub(crate) fn parse(src: &str) -> Result<Vec<Entry>, toml::de::Error> {
    match Value::deserialize(toml::Deserializer::new(src))? {
        Value::Table(mut t) => {
            fill_table(&mut t, &(0..0));
            Ok(t)
        }
        _ => Ok(Vec::new()),
    }
}

fn fill_table(entries: &mut [Entry], parent: &Range<usize>) {
    for e in entries {
        if e.key_span == NO_SPAN {
            e.key_span = if e.node.span == NO_SPAN {
                parent.clone()
            } else {
                e.node.span.clone()
            };
        }
        if e.node.span == NO_SPAN {
            e.node.span = e.key_span.clone();
        }
        fill(&mut e.node);
    }
}

fn fill(node: &mut Node) {
    let span = node.span.clone();
    match &mut node.value {
        Value::Array(items) => {
            for n in items {
                if n.span == NO_SPAN {
                    n.span = span.clone();
                }
                fill(n);
            }
        }
        Value::Table(entries) => fill_table(entries, &span),
        _ => {}
    }
}

/// The (private) struct name and fields with which `toml::Spanned` asks a
/// deserializer for a span, learned through `Spanned`'s own public
/// `Deserialize` impl. Asking with them, as `Spanned` does, and accepting a
/// plain value too, lets a missing span degrade instead of failing.
struct SpannedProtocol {
    name: &'static str,
    fields: &'static [&'static str],
}

fn spanned_protocol() -> &'static SpannedProtocol {
    static P: OnceLock<SpannedProtocol> = OnceLock::new();
    P.get_or_init(|| {
        let mut cap = Capture(None);
        let _ = Spanned::<()>::deserialize(&mut cap);
        let (name, fields) = cap.0.expect("toml::Spanned deserializes as a struct");
        assert_eq!(
            fields.len(),
            3,
            "toml::Spanned has start, end and value fields"
        );
        SpannedProtocol { name, fields }
    })
}

/// A deserializer that only records what `deserialize_struct` was asked for.
struct Capture(Option<(&'static str, &'static [&'static str])>);

#[derive(Debug)]
struct CaptureDone;

impl fmt::Display for CaptureDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("captured")
    }
}

impl std::error::Error for CaptureDone {}

impl de::Error for CaptureDone {
    fn custom<T: fmt::Display>(_: T) -> Self {
        CaptureDone
    }
}

impl<'de> Deserializer<'de> for &mut Capture {
    type Error = CaptureDone;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, CaptureDone> {
        Err(CaptureDone)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, CaptureDone> {
        self.0 = Some((name, fields));
        Err(CaptureDone)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = spanned_protocol();
        d.deserialize_struct(p.name, p.fields, NodeVisitor)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// A node: the spanned protocol (a map of start, end, value), or a plain value.
struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        ValueVisitor.visit_bool(v).map(unspanned)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        ValueVisitor.visit_i64(v).map(unspanned)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        ValueVisitor.visit_u64(v).map(unspanned)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        ValueVisitor.visit_f64(v).map(unspanned)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        ValueVisitor.visit_str(v).map(unspanned)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        ValueVisitor.visit_string(v).map(unspanned)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Node, A::Error> {
        ValueVisitor.visit_seq(seq).map(unspanned)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let p = spanned_protocol();
        let Some(first) = map.next_key::<Key>()? else {
            return Ok(unspanned(Value::Table(Vec::new())));
        };
        if first.span.is_none() && first.name == p.fields[0] {
            let start: usize = map.next_value()?;
            let _end_key = map.next_key::<Key>()?;
            let end: usize = map.next_value()?;
            let _value_key = map.next_key::<Key>()?;
            let value: Value = map.next_value()?;
            return Ok(Node {
                span: start..end,
                value,
            });
        }
        table_from(first, map).map(unspanned)
    }
}

fn unspanned(value: Value) -> Node {
    Node {
        span: NO_SPAN,
        value,
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Boolean(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Integer(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Integer)
            .map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Float)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        match map.next_key::<Key>()? {
            None => Ok(Value::Table(Vec::new())),
            Some(first) => table_from(first, map),
        }
    }
}

/// The rest of a table (or date-time) whose first key was read.
fn table_from<'de, A: MapAccess<'de>>(first: Key, mut map: A) -> Result<Value, A::Error> {
    if first.span.is_none() && first.name == DATETIME_FIELD {
        map.next_value::<de::IgnoredAny>()?;
        return Ok(Value::Datetime);
    }
    let mut entries = Vec::new();
    let mut key = Some(first);
    while let Some(k) = key {
        let node = map.next_value::<Node>()?;
        entries.push(Entry {
            key: k.name,
            key_span: k.span.unwrap_or(NO_SPAN),
            node,
        });
        key = map.next_key::<Key>()?;
    }
    Ok(Value::Table(entries))
}

/// A table key, with its span when toml has one.
struct Key {
    name: String,
    span: Option<Range<usize>>,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = spanned_protocol();
        d.deserialize_struct(p.name, p.fields, KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key {
            name: v.to_owned(),
            span: None,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        let mut start = None;
        let mut end = None;
        let mut name = None;
        let p = spanned_protocol();
        while let Some(k) = map.next_key::<String>()? {
            if k == p.fields[0] {
                start = Some(map.next_value::<usize>()?);
            } else if k == p.fields[1] {
                end = Some(map.next_value::<usize>()?);
            } else {
                name = Some(map.next_value::<String>()?);
            }
        }
        let name = name.ok_or_else(|| de::Error::custom("a spanned key without its value"))?;
        Ok(Key {
            name,
            span: start.zip(end).map(|(s, e)| s..e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(src: &str, r: &Range<usize>) -> String {
        src[r.clone()].to_string()
    }

    #[test]
    fn spans_of_keys_and_values() {
        let src =
            "mode = \"audit\"\n[guard]\nusers = [\"root\", 3]\n[[allow]]\nname = \"x\"\n[[allow]]\nname = \"y\"\n";
        let root = parse(src).unwrap();
        assert_eq!(root[0].key, "mode");
        assert_eq!(at(src, &root[0].key_span), "mode");
        assert_eq!(at(src, &root[0].node.span), "\"audit\"");
        let Value::Table(g) = &root[1].node.value else {
            panic!()
        };
        let Value::Array(u) = &g[0].node.value else {
            panic!()
        };
        assert_eq!(at(src, &u[1].span), "3");
        let Value::Array(a) = &root[2].node.value else {
            panic!()
        };
        assert_eq!(a.len(), 2);
        let Value::Table(t) = &a[1].value else {
            panic!()
        };
        assert_eq!(at(src, &t[0].node.span), "\"y\"");
    }

    #[test]
    fn dotted_keys_and_datetimes() {
        let src = "guard.users = [1]\n[a.b]\nc = 1979-05-27T07:32:00Z\n";
        let root = parse(src).unwrap();
        assert_eq!(root[0].key, "guard");
        assert_eq!(at(src, &root[0].key_span), "guard");
        let Value::Table(g) = &root[0].node.value else {
            panic!()
        };
        assert_eq!(g[0].key, "users");
        assert_eq!(at(src, &g[0].node.span), "[1]");
        let Value::Table(a) = &root[1].node.value else {
            panic!()
        };
        let Value::Table(b) = &a[0].node.value else {
            panic!()
        };
        assert!(matches!(b[0].node.value, Value::Datetime));
    }
}
