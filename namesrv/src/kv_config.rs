//! The name server's KV config (PUT_KV_CONFIG, GET_KV_CONFIG, DELETE_KV_CONFIG): values by
//! namespace and key, as RocketMQ's `KVConfigManager` keeps them. `mqadmin updateTopic -o
//! true` puts an ordered topic's queue layout under `ORDER_TOPIC_CONFIG`, which routes carry
//! as `orderTopicConf` when `orderMessageEnable` is set.
//!
//! Each name server holds its own (they never talk to each other); the admin tools write to
//! every name server. With `kvConfigPath` set, every change is written to that file
//! (RocketMQ's `KVConfigSerializeWrapper` JSON, `{"configTable":{ns:{key:value}}}`) through a
//! temporary file, fsync'd and renamed, before it is answered, and the file is read at
//! start-up; without it the values live in memory only.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// RocketMQ's namespace of ordered topics' queue layouts (`NamesrvUtil`).
pub const NAMESPACE_ORDER_TOPIC_CONFIG: &str = "ORDER_TOPIC_CONFIG";
/// The most values a name server holds.
pub const MAX_KV_ENTRIES: usize = 100_000;
/// The longest value (bytes).
pub const MAX_KV_VALUE_BYTES: usize = 64 * 1024;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Wrapper {
    config_table: BTreeMap<String, BTreeMap<String, String>>,
}

/// The values, and the file they are kept in.
#[derive(Debug, Default)]
pub struct KvConfig {
    table: BTreeMap<String, BTreeMap<String, String>>,
    path: Option<PathBuf>,
}

impl KvConfig {
    /// Reads `path` if it exists (an absent file is an empty table); `None`: memory only.
    pub fn open(path: Option<PathBuf>) -> Result<Self, String> {
        let mut kv = KvConfig {
            table: BTreeMap::new(),
            path,
        };
        if let Some(path) = &kv.path {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let w: Wrapper = serde_json::from_slice(&bytes)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    kv.table = w.config_table;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(kv)
    }

    pub fn get(&self, namespace: &str, key: &str) -> Option<&str> {
        self.table.get(namespace)?.get(key).map(String::as_str)
    }

    /// Sets a value, durable (with a file) before it returns.
    pub fn put(&mut self, namespace: &str, key: &str, value: &str) -> Result<(), String> {
        if value.len() > MAX_KV_VALUE_BYTES {
            return Err(format!(
                "the value is {} bytes, more than {MAX_KV_VALUE_BYTES}",
                value.len()
            ));
        }
        let count: usize = self.table.values().map(BTreeMap::len).sum();
        if count >= MAX_KV_ENTRIES && self.get(namespace, key).is_none() {
            return Err(format!(
                "this name server holds {MAX_KV_ENTRIES} values already"
            ));
        }
        let previous = self
            .table
            .entry(namespace.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
        self.persist().inspect_err(|_| {
            // Not durable: not done.
            let ns = self.table.get_mut(namespace).expect("just inserted");
            match previous {
                Some(p) => ns.insert(key.to_string(), p),
                None => ns.remove(key),
            };
        })
    }

    /// Deletes a value (none is fine), durable (with a file) before it returns.
    pub fn delete(&mut self, namespace: &str, key: &str) -> Result<(), String> {
        let Some(ns) = self.table.get_mut(namespace) else {
            return Ok(());
        };
        if ns.remove(key).is_none() {
            return Ok(());
        }
        if ns.is_empty() {
            self.table.remove(namespace);
        }
        self.persist()
    }

    fn persist(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let body = serde_json::to_vec_pretty(&Wrapper {
            config_table: self.table.clone(),
        })
        .map_err(|e| e.to_string())?;
        write_durably(path, &body).map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn write_durably(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(body)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_a_restart_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvConfig.json");
        let mut kv = KvConfig::open(Some(path.clone())).unwrap();
        kv.put(NAMESPACE_ORDER_TOPIC_CONFIG, "T", "broker-a:4")
            .unwrap();
        kv.put("ns", "k", "v").unwrap();
        kv.delete("ns", "k").unwrap();
        kv.delete("ns", "absent").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"configTable\""), "{text}");
        let kv = KvConfig::open(Some(path)).unwrap();
        assert_eq!(
            kv.get(NAMESPACE_ORDER_TOPIC_CONFIG, "T"),
            Some("broker-a:4")
        );
        assert_eq!(kv.get("ns", "k"), None);
    }

    #[test]
    fn oversized_values_are_refused() {
        let mut kv = KvConfig::open(None).unwrap();
        assert!(kv
            .put("ns", "k", &"x".repeat(MAX_KV_VALUE_BYTES + 1))
            .is_err());
        assert_eq!(kv.get("ns", "k"), None);
    }
}
