//! RocketMQ-style properties files (`key=value`, `#` or `!` comments), the format of
//! every rocketraft config file. Shared here so every binary reads them the same way.

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
    #[error("{path}:{line}: `{text}` is not `key=value`")]
    Syntax {
        path: String,
        line: usize,
        text: String,
    },
    #[error("{path}:{line}: key `{key}` appears twice")]
    Duplicate {
        path: String,
        line: usize,
        key: String,
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
}

impl Properties {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    pub fn parse(origin: &str, text: &str) -> Result<Self, ConfigError> {
        let mut entries = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some(split) = line.find(['=', ':']) else {
                return Err(ConfigError::Syntax {
                    path: origin.into(),
                    line: i + 1,
                    text: line.into(),
                });
            };
            let key = line[..split].trim().to_string();
            let value = line[split + 1..].trim().to_string();
            if key.is_empty() {
                return Err(ConfigError::Syntax {
                    path: origin.into(),
                    line: i + 1,
                    text: line.into(),
                });
            }
            if entries.insert(key.clone(), (value, i + 1)).is_some() {
                return Err(ConfigError::Duplicate {
                    path: origin.into(),
                    line: i + 1,
                    key,
                });
            }
        }
        Ok(Properties {
            origin: origin.into(),
            entries,
        })
    }

    /// Takes a key out, parsing its value; what is left at the end is unknown keys.
    pub fn take<T: std::str::FromStr>(&mut self, key: &str) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.entries.remove(key) {
            None => Ok(None),
            Some((value, line)) => {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_comments_and_reports_bad_lines() {
        let mut p = Properties::parse(
            "t.conf",
            "# comment\n! other\nlistenPort = 9876\nname: a=b\n\n",
        )
        .unwrap();
        assert_eq!(p.take::<u16>("listenPort").unwrap(), Some(9876));
        assert_eq!(p.take::<String>("missing").unwrap(), None);
        assert_eq!(p.unknown_keys(), vec!["t.conf:4: name".to_string()]);
        assert_eq!(p.take::<String>("name").unwrap().as_deref(), Some("a=b"));

        let err = Properties::parse("t.conf", "a=1\nnonsense\n").unwrap_err();
        assert!(err.to_string().contains("t.conf:2"), "{err}");
        assert!(Properties::parse("t.conf", "a=1\na=2").is_err());
        let mut p = Properties::parse("t.conf", "port=x").unwrap();
        let err = p.take::<u16>("port").unwrap_err().to_string();
        assert!(err.contains("t.conf:1") && err.contains("port=x"), "{err}");
    }
}
