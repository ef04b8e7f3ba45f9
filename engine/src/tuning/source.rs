//! One tuning file in memory, with an index from key paths to byte spans, so that serde
//! errors (which carry a span) get a key path and validation errors (which carry a key path)
//! get a `line:col`.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml_edit::{ImDocument, Item, Table, Value};

use super::error::{Location, Problem, Reason, TuningError, TuningErrors};

/// A key (or array element) and where it is.
#[derive(Debug)]
struct Span {
    path: String,
    /// The key itself (or the element, for array elements).
    key: Range<usize>,
    /// The value or table body, when known.
    value: Option<Range<usize>>,
}

/// A parsed tuning file.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) name: String,
    pub(crate) text: String,
    spans: Vec<Span>,
    /// Prefix shown before document paths (`cluster.`, `host.` or empty).
    pub(crate) display_prefix: &'static str,
    /// Top-level keys, for telling the file kinds apart.
    pub(crate) top_keys: Vec<String>,
}

impl Source {
    /// Parses `text` as TOML and indexes its keys.
    pub(crate) fn parse(name: &str, text: String) -> Result<Self, TuningErrors> {
        let document = match ImDocument::parse(text.as_str()) {
            Ok(document) => document,
            Err(error) => {
                let location = error.span().map(|span| location_of(&text, span.start));
                let key = error
                    .span()
                    .and_then(|span| key_on_line(&text, span.start))
                    .unwrap_or_default();
                return Err(TuningError {
                    file: name.to_owned(),
                    location,
                    key,
                    reason: Reason::Syntax(error.message().trim().to_owned()),
                }
                .into());
            }
        };
        let mut spans = Vec::new();
        index_table(document.as_table(), "", &mut spans);
        let top_keys = document
            .as_table()
            .iter()
            .map(|(key, _)| key.to_owned())
            .collect();
        Ok(Self {
            name: name.to_owned(),
            text,
            spans,
            display_prefix: "",
            top_keys,
        })
    }

    /// Deserializes the whole document into `T`, mapping a serde error to a key path.
    pub(crate) fn deserialize<T: DeserializeOwned>(&self) -> Result<T, TuningErrors> {
        toml::from_str::<T>(&self.text).map_err(|error| self.serde_error(&error).into())
    }

    /// Turns validation problems into errors carrying this file's name and locations.
    pub(crate) fn errors(&self, problems: Vec<Problem>) -> Vec<TuningError> {
        problems
            .into_iter()
            .map(|problem| TuningError {
                file: self.name.clone(),
                location: self.locate(&problem.path),
                key: self.display_key(&problem.path),
                reason: problem.reason,
            })
            .collect()
    }

    fn display_key(&self, path: &str) -> String {
        if path.is_empty() {
            self.display_prefix.trim_end_matches('.').to_owned()
        } else {
            format!("{}{path}", self.display_prefix)
        }
    }

    /// `line:col` of the key at `path`, or of its nearest ancestor that appears in the file
    /// (a missing key is reported at its table).
    fn locate(&self, path: &str) -> Option<Location> {
        let mut path = path;
        loop {
            if let Some(span) = self.spans.iter().find(|span| span.path == path) {
                return Some(location_of(&self.text, span.key.start));
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }

    /// The innermost key whose key or value span contains `offset`.
    fn path_at(&self, offset: usize) -> Option<&str> {
        self.spans
            .iter()
            .filter(|span| {
                span.key.contains(&offset)
                    || span
                        .value
                        .as_ref()
                        .is_some_and(|value| value.contains(&offset))
            })
            .min_by_key(|span| {
                let value = span.value.clone().unwrap_or(span.key.clone());
                if span.key.contains(&offset) {
                    span.key.len()
                } else {
                    value.len()
                }
            })
            .map(|span| span.path.as_str())
    }

    fn serde_error(&self, error: &toml::de::Error) -> TuningError {
        let message = error.message().trim().to_owned();
        let location = error.span().map(|span| location_of(&self.text, span.start));
        let at = error
            .span()
            .filter(|span| !(span.start == 0 && span.end >= self.text.len()))
            .and_then(|span| self.path_at(span.start))
            .unwrap_or("")
            .to_owned();
        let (path, reason) = if let Some(field) = quoted_after(&message, "unknown field ") {
            let expected = message
                .split_once("expected ")
                .map(|(_, rest)| rest.to_owned())
                .unwrap_or_else(|| "no keys here".to_owned());
            // The span points at the unknown key itself, so `at` already ends with it.
            let path = if at.is_empty() { field.to_owned() } else { at };
            (path, Reason::UnknownKey { expected })
        } else if let Some(field) = quoted_after(&message, "missing field ") {
            // The span covers the table that lacks the key.
            let path = join(&at, field);
            (path, Reason::MissingKey)
        } else {
            (at, Reason::BadValue(message))
        };
        let location = self.locate(&path).or(location);
        TuningError {
            file: self.name.clone(),
            location,
            key: self.display_key(&path),
            reason,
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// The text between the backquotes after `prefix` in serde's messages (``unknown field `x` ``).
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    let rest = rest.strip_prefix('`')?;
    let end = rest.find('`')?;
    Some(&rest[..end])
}

/// The path of the `key = value` line holding byte `offset`, read from the table headers
/// above it, for a syntax error (no document to ask): an integer over 64 bits is one, and
/// is best reported at its key. The path is as written in the file, without the
/// `cluster.`/`host.` prefix the file's kind would add (the kind is not known yet). `None`
/// when the line is not a key's.
fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |newline| newline + 1);
    let line = text[start..].lines().next().unwrap_or("").trim_start();
    if line.starts_with(['#', '[']) {
        return None;
    }
    let (key, _) = line.split_once('=')?;
    // Arrays of tables seen so far, with the index of their latest element.
    let mut arrays: Vec<(&str, usize)> = Vec::new();
    let mut table = String::new();
    for header in text[..start].lines().map(str::trim) {
        let header = header.split_once('#').map_or(header, |(h, _)| h).trim_end();
        if let Some(name) = header.strip_prefix("[[").and_then(|h| h.strip_suffix("]]")) {
            let name = name.trim();
            let k = match arrays.iter_mut().find(|(array, _)| *array == name) {
                Some((_, k)) => {
                    *k += 1;
                    *k
                }
                None => {
                    arrays.push((name, 0));
                    0
                }
            };
            table = format!("{name}[{k}]");
        } else if let Some(name) = header.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            let name = name.trim();
            // A sub-table of an array's latest element (`[hosts.cores]` after `[[hosts]]`).
            table = match arrays
                .iter()
                .filter(|(array, _)| {
                    name.starts_with(array) && name[array.len()..].starts_with('.')
                })
                .max_by_key(|(array, _)| array.len())
            {
                Some((array, k)) => format!("{array}[{k}]{}", &name[array.len()..]),
                None => name.to_owned(),
            };
        }
    }
    Some(join(&table, key.trim()))
}

/// 1-based line and column (in characters) of byte `offset`.
pub(crate) fn location_of(text: &str, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    Location { line, column }
}

fn index_table(table: &Table, prefix: &str, spans: &mut Vec<Span>) {
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        let path = join(prefix, name);
        let key_span = key.span().or_else(|| item.span()).unwrap_or(0..0);
        index_item(item, path, key_span, spans);
    }
}

fn index_item(item: &Item, path: String, key: Range<usize>, spans: &mut Vec<Span>) {
    match item {
        Item::None => {}
        Item::Value(value) => index_value(value, path, key, spans),
        Item::Table(table) => {
            spans.push(Span {
                path: path.clone(),
                key,
                value: table.span(),
            });
            index_table(table, &path, spans);
        }
        Item::ArrayOfTables(array) => {
            spans.push(Span {
                path: path.clone(),
                key: key.clone(),
                value: array.span(),
            });
            for (i, table) in array.iter().enumerate() {
                let element = format!("{path}[{i}]");
                let span = table.span().unwrap_or(key.clone());
                spans.push(Span {
                    path: element.clone(),
                    key: span.clone(),
                    value: Some(span),
                });
                index_table(table, &element, spans);
            }
        }
    }
}

fn index_value(value: &Value, path: String, key: Range<usize>, spans: &mut Vec<Span>) {
    spans.push(Span {
        path: path.clone(),
        key,
        value: value.span(),
    });
    match value {
        Value::Array(array) => {
            for (i, element) in array.iter().enumerate() {
                let span = element.span().unwrap_or(0..0);
                index_value(element, format!("{path}[{i}]"), span, spans);
            }
        }
        Value::InlineTable(table) => {
            for (name, _) in table.iter() {
                let Some((key, item)) = table.get_key_value(name) else {
                    continue;
                };
                let span = key.span().unwrap_or(0..0);
                index_item(item, join(&path, name), span, spans);
            }
        }
        _ => {}
    }
}
