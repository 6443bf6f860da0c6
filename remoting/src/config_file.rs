//! Properties files read as Java's `java.util.Properties.load` reads them: the format of
//! every rocketraft config file, and of RocketMQ's broker and name server configs, so an
//! existing RocketMQ config reads the same here. Shared so every binary reads them alike.
//!
//! What a file may hold, by OpenJDK's `Properties.load` rules:
//! - Lines end with `\n`, `\r` or `\r\n`. White space is space, tab and form feed; it is
//!   dropped at the start of every line. Blank lines and comment lines (`#` or `!` first)
//!   are skipped.
//! - A line ending in an odd number of backslashes goes on in the next line: that backslash,
//!   the line break and the next line's leading white space are dropped. A comment line is
//!   never continued; a backslash ending the file is dropped.
//! - The key runs to the first `=`, `:` or white space not escaped by a backslash; then
//!   white space, at most one `=` or `:`, and white space again are skipped, and the rest
//!   of the line is the value (`key=value`, `key = value`, `key:value`, `key value`; a key
//!   alone has the empty value). Trailing white space stays in the value, as in Java;
//!   [`Properties::take`] trims it before parsing.
//! - Escapes, in keys and values: `\uXXXX` (exactly four hex digits), `\t`, `\n`, `\r`,
//!   `\f`; a backslash before any other character stands for that character (`\\`, `\=`,
//!   `\:`, `\ `, `\#`).
//! - A key given twice keeps its last value, as in Java; each repeat is listed by
//!   [`Properties::duplicate_keys`] for the binaries to warn about.
//!
//! Where this reader differs: a file is read as UTF-8 (RocketMQ's `load(InputStream)` reads
//! ISO 8859-1; both read ASCII alike, and `\uXXXX` means the same in both); a malformed
//! `\uXXXX` is an error naming the file and line, where Java throws an
//! `IllegalArgumentException` naming neither; and a `\uXXXX` that is half of a UTF-16
//! surrogate pair without its other half is an error (a Rust string cannot hold it).

use std::collections::BTreeMap;
use std::path::Path;

/// What is wrong with a config file, with its line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// `line` is the line the entry starts on (an escape may sit on a continued line).
    #[error("{path}:{line}: {reason}")]
    Escape {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{origin}: `{key}={value}`: {reason}")]
    BadValue {
        origin: String,
        key: String,
        value: String,
        reason: String,
    },
}

/// The keys of one file, each with its value and line.
#[derive(Debug, Clone, Default)]
pub struct Properties {
    pub origin: String,
    pub entries: BTreeMap<String, (String, usize)>,
    /// Keys set more than once, as `origin:line: key (...)`.
    duplicates: Vec<String>,
}

/// White space in a properties file: space, tab and form feed (line breaks end lines).
const WHITESPACE: [char; 3] = [' ', '\t', '\x0c'];

impl Properties {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    pub fn parse(origin: &str, text: &str) -> Result<Self, ConfigError> {
        let mut props = Properties {
            origin: origin.into(),
            ..Properties::default()
        };
        for (line, logical) in logical_lines(text) {
            let bad = |reason| ConfigError::Escape {
                path: origin.into(),
                line,
                reason,
            };
            let (raw_key, raw_value) = split_key_value(&logical);
            let key = unescape(raw_key).map_err(bad)?;
            let value = unescape(raw_value).map_err(bad)?;
            if let Some((_, earlier)) = props.entries.insert(key.clone(), (value, line)) {
                props.duplicates.push(format!(
                    "{origin}:{line}: {key} (also set at line {earlier}; this later value is used)"
                ));
            }
        }
        Ok(props)
    }

    /// Takes a key out, parsing its value with surrounding white space trimmed; what is
    /// left at the end is unknown keys. (Java keeps a value's trailing white space, and
    /// RocketMQ then fails to parse `listenPort=10911 ` as a number and silently keeps the
    /// default; reading what was meant is kinder.)
    pub fn take<T: std::str::FromStr>(&mut self, key: &str) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.entries.remove(key) {
            None => Ok(None),
            Some((value, line)) => {
                let value = value.trim().to_string();
                value
                    .parse()
                    .map(Some)
                    .map_err(|e: T::Err| ConfigError::BadValue {
                        origin: format!("{}:{line}", self.origin),
                        key: key.into(),
                        value,
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// Keys nobody took, for reporting at start-up.
    pub fn unknown_keys(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(k, (_, line))| format!("{}:{line}: {k}", self.origin))
            .collect()
    }

    /// Keys the file sets more than once (the last value wins), for warning at start-up.
    pub fn duplicate_keys(&self) -> &[String] {
        &self.duplicates
    }
}

/// The natural lines of `text`, each without its line break (`\n`, `\r` or `\r\n`).
fn natural_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.find(['\n', '\r']).unwrap_or(rest.len());
        let line = &rest[..end];
        let line_break = if rest[end..].starts_with("\r\n") {
            2
        } else {
            usize::from(end < rest.len())
        };
        rest = &rest[end + line_break..];
        Some(line)
    })
}

/// The logical lines of `text`, each with the line it starts on (from 1): blank and comment
/// lines skipped, leading white space dropped, continued lines joined.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut natural = natural_lines(text).enumerate();
    let mut logical_lines = Vec::new();
    while let Some((index, first)) = natural.next() {
        let first = first.trim_start_matches(WHITESPACE);
        if first.is_empty() || first.starts_with(['#', '!']) {
            continue;
        }
        let mut logical = first.to_string();
        while ends_in_odd_backslashes(&logical) {
            logical.pop();
            let Some((_, next)) = natural.next() else {
                break;
            };
            logical.push_str(next.trim_start_matches(WHITESPACE));
        }
        if !logical.is_empty() {
            logical_lines.push((index + 1, logical));
        }
    }
    logical_lines
}

/// Whether `line` ends in an odd number of backslashes: the last one escapes the line
/// break (with an even number, they are escaped backslashes).
fn ends_in_odd_backslashes(line: &str) -> bool {
    line.bytes().rev().take_while(|b| *b == b'\\').count() % 2 == 1
}

/// A logical line's key and value, escapes still in them. The key ends at the first `=`,
/// `:` or white space not escaped; white space, one `=` or `:` (unless that ended the
/// key) and white space again come before the value.
fn split_key_value(line: &str) -> (&str, &str) {
    let mut escaped = false;
    let mut key_end = line.len();
    let mut ended_by_separator = false;
    for (at, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' | ' ' | '\t' | '\x0c' => {
                key_end = at;
                ended_by_separator = c == '=' || c == ':';
                break;
            }
            _ => {}
        }
    }
    let after_key = line[key_end..].get(1..).unwrap_or("");
    let mut value = after_key.trim_start_matches(WHITESPACE);
    if !ended_by_separator {
        if let Some(rest) = value.strip_prefix(['=', ':']) {
            value = rest.trim_start_matches(WHITESPACE);
        }
    }
    (&line[..key_end], value)
}

/// `raw` with its escapes replaced by what they stand for.
fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let mut escaped = rest[at + 1..].chars();
        match escaped.next() {
            Some('u') => {
                let (c, after) = unicode_escape(escaped.as_str())?;
                out.push(c);
                rest = after;
                continue;
            }
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some(other) => out.push(other),
            // A lone backslash at the very end; `logical_lines` already dropped it.
            None => {}
        }
        rest = escaped.as_str();
    }
    out.push_str(rest);
    Ok(out)
}

/// The character a `\uXXXX` escape stands for, given the text after its `\u`, and the text
/// after the escape. A UTF-16 surrogate pair is two escapes in a row (`\uD83D\uDE00`).
fn unicode_escape(after_u: &str) -> Result<(char, &str), String> {
    let Some(unit) = hex4(after_u) else {
        let shown: String = after_u.chars().take(4).collect();
        return Err(format!(
            "malformed \\uXXXX escape `\\u{shown}`: \\u needs exactly four hex digits"
        ));
    };
    let mut rest = &after_u[4..];
    let mut units = vec![unit];
    if (0xD800..0xDC00).contains(&unit) {
        if let Some(low) = rest.strip_prefix("\\u").and_then(hex4) {
            units.push(low);
            rest = &rest[6..];
        }
    }
    let mut decoded = char::decode_utf16(units);
    match (decoded.next(), decoded.next()) {
        (Some(Ok(c)), None) => Ok((c, rest)),
        _ => Err(format!(
            "`\\u{unit:04X}` is half of a UTF-16 surrogate pair without its other half"
        )),
    }
}

/// The value of the four hex digits `s` starts with.
fn hex4(s: &str) -> Option<u16> {
    let digits = s.get(..4)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key to value, as Java's `Properties.load` would hold them.
    fn parsed(text: &str) -> BTreeMap<String, String> {
        Properties::parse("t.conf", text)
            .unwrap()
            .entries
            .into_iter()
            .map(|(key, (value, _line))| (key, value))
            .collect()
    }

    fn pairs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_end_at_equals_colon_or_white_space() {
        let text = "a=1\nb:2\nc 3\nd = 4\ne\t:\t5\nf\x0c6\ng  =  = 7\nh:=8\ni = a=b:c d\nalone\n";
        assert_eq!(
            parsed(text),
            pairs(&[
                ("a", "1"),
                ("b", "2"),
                ("c", "3"),
                ("d", "4"),
                ("e", "5"),
                ("f", "6"),
                ("g", "= 7"),
                ("h", "=8"),
                ("i", "a=b:c d"),
                ("alone", ""),
            ])
        );
        // Trailing white space stays in the value, as in Java; `take` trims it.
        let mut p = Properties::parse("t.conf", "port = 9876 \t\n").unwrap();
        assert_eq!(p.entries["port"].0, "9876 \t");
        assert_eq!(p.take::<u16>("port").unwrap(), Some(9876));
    }

    #[test]
    fn leading_white_space_blank_lines_and_comments_are_skipped() {
        let text =
            "  \t\x0ca=1\n\n   \n# c=3\n! d=4\n   # e=5\n\t! f=6\ng=7 # not a comment\n#\\\nh=8\n";
        assert_eq!(
            parsed(text),
            pairs(&[("a", "1"), ("g", "7 # not a comment"), ("h", "8")])
        );
    }

    #[test]
    fn a_backslash_before_the_line_break_continues_the_line() {
        // The javadoc's example: the backslash, the line break and the next line's leading
        // white space are dropped.
        let text = "fruits                           apple, banana, pear, \\\n                                  cantaloupe, watermelon, \\\n                                  kiwi, mango\nnext=1\n";
        assert_eq!(
            parsed(text),
            pairs(&[
                (
                    "fruits",
                    "apple, banana, pear, cantaloupe, watermelon, kiwi, mango"
                ),
                ("next", "1"),
            ])
        );
        // The key may be continued too, a continued line starting with `#` is no comment,
        // and every kind of line break counts.
        let text = "ke\\\r\n  y=a\\\r   # b\\\n\nc=d\r\n";
        assert_eq!(parsed(text), pairs(&[("key", "a# b"), ("c", "d")]));
        // Only an odd number of backslashes continues: `\\` is one escaped backslash.
        assert_eq!(
            parsed("a=x\\\\\nb=y\\\\\\\n  z\n"),
            pairs(&[("a", "x\\"), ("b", "y\\z")])
        );
        // The line the entry starts on is the one reported.
        let p = Properties::parse("t.conf", "a=1\\\n2\nb=3\n").unwrap();
        assert_eq!((p.entries["a"].1, p.entries["b"].1), (1, 3));
    }

    #[test]
    fn a_backslash_ending_the_file_is_dropped() {
        assert_eq!(parsed("a=b\\"), pairs(&[("a", "b")]));
        assert_eq!(parsed("a=b\\\n"), pairs(&[("a", "b")]));
        assert_eq!(parsed("a=b\\\\\\"), pairs(&[("a", "b\\")]));
    }

    #[test]
    fn escapes_stand_for_their_characters() {
        let text = "a=\\u0041\\u00e9\\u4E2D\nb=\\t\\n\\r\\f\nc=\\\\ \\z\\#\\\"\nd=\\uD83D\\uDE00\n";
        assert_eq!(
            parsed(text),
            pairs(&[
                ("a", "Aé中"),
                ("b", "\t\n\r\x0c"),
                ("c", "\\ z#\""),
                ("d", "\u{1F600}"),
            ])
        );
        // The escape of a separator puts it into the key.
        assert_eq!(
            parsed("\\:\\==x\nkey\\ with\\ spaces value\na\\tb=1\n\\u0041=2\n"),
            pairs(&[
                (":=", "x"),
                ("key with spaces", "value"),
                ("a\tb", "1"),
                ("A", "2"),
            ])
        );
    }

    #[test]
    fn a_malformed_unicode_escape_is_an_error_naming_file_and_line() {
        for (text, shown) in [
            ("a=1\nb=\\u12G4\n", "\\u12G4"),
            ("a=1\nb=x\\u12\n", "\\u12"),
            ("a=1\n\\u+123=x\n", "\\u+123"),
        ] {
            let err = Properties::parse("t.conf", text).unwrap_err().to_string();
            assert!(
                err.starts_with("t.conf:2: malformed \\uXXXX escape") && err.contains(shown),
                "{text:?}: {err}"
            );
        }
        let err = Properties::parse("t.conf", "a=\\uD83Dx")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.conf:1") && err.contains("surrogate"),
            "{err}"
        );
    }

    #[test]
    fn the_last_of_duplicate_keys_wins_and_each_repeat_is_reported() {
        let mut p = Properties::parse("t.conf", "a=1\nb=2\na : 3\na 4\n").unwrap();
        assert_eq!(
            p.duplicate_keys(),
            [
                "t.conf:3: a (also set at line 1; this later value is used)",
                "t.conf:4: a (also set at line 3; this later value is used)",
            ]
        );
        assert_eq!(p.take::<u32>("a").unwrap(), Some(4));
        assert!(Properties::parse("t.conf", "a=1\nb=2\n")
            .unwrap()
            .duplicate_keys()
            .is_empty());
    }

    #[test]
    fn take_parses_and_leaves_unknown_keys() {
        let mut p = Properties::parse("t.conf", "listenPort = 9876\nname: a=b\nport=x\n").unwrap();
        assert_eq!(p.take::<u16>("listenPort").unwrap(), Some(9876));
        assert_eq!(p.take::<String>("missing").unwrap(), None);
        let err = p.take::<u16>("port").unwrap_err().to_string();
        assert!(err.contains("t.conf:3") && err.contains("port=x"), "{err}");
        assert_eq!(p.unknown_keys(), vec!["t.conf:2: name".to_string()]);
        assert_eq!(p.take::<String>("name").unwrap().as_deref(), Some("a=b"));
    }
}
