//! Consumer offsets: the in-memory table of consumed offsets a push consumer keeps per
//! owned queue, and where they are committed.
//!
//! - Clustering: on the broker group's leader (UPDATE_CONSUMER_OFFSET, oneway on the
//!   periodic commit, a request with an answer at shutdown); read back with
//!   QUERY_CONSUMER_OFFSET. The broker replicates them through its Raft log.
//! - Broadcasting: in `<local_offset_store_dir>/<consumer_group>/offsets.json`, written
//!   to a temporary file, synced, then renamed over the old one, so a crash leaves the
//!   old or the new file, never a torn one.
//!
//! An offset is "the lowest offset not yet consumed": committing it means every message
//! before it was consumed. Updates from consumption only move it forward.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::{debug, warn};

use crate::api;
use crate::error::{ClientError, Result};
use crate::instance::ClientInstance;
use crate::message::MessageQueue;

enum Backend {
    Remote,
    Local { path: PathBuf },
}

pub(crate) struct OffsetStore {
    instance: Arc<ClientInstance>,
    consumer_group: String,
    backend: Backend,
    table: Mutex<HashMap<MessageQueue, i64>>,
    /// Broadcasting: what the file held at start.
    loaded: HashMap<MessageQueue, i64>,
}

fn key(q: &MessageQueue) -> String {
    format!("{}@{}@{}", q.topic, q.broker_name, q.queue_id)
}

fn parse_key(k: &str) -> Option<MessageQueue> {
    // A topic never holds `@`; a broker name might.
    let (topic, rest) = k.split_once('@')?;
    let (broker_name, queue_id) = rest.rsplit_once('@')?;
    Some(MessageQueue::new(
        topic,
        broker_name,
        queue_id.parse().ok()?,
    ))
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OffsetFile {
    offset_table: BTreeMap<String, i64>,
}

impl OffsetStore {
    pub fn remote(instance: Arc<ClientInstance>, consumer_group: &str) -> Self {
        OffsetStore {
            instance,
            consumer_group: consumer_group.to_string(),
            backend: Backend::Remote,
            table: Mutex::new(HashMap::new()),
            loaded: HashMap::new(),
        }
    }

    /// Opens (or starts) the broadcasting offset file.
    pub fn local(instance: Arc<ClientInstance>, consumer_group: &str, dir: &Path) -> Result<Self> {
        let path = dir.join(consumer_group).join("offsets.json");
        let loaded = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: OffsetFile =
                    serde_json::from_slice(&bytes).map_err(|e| ClientError::OffsetStore {
                        path: path.clone(),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                    })?;
                file.offset_table
                    .iter()
                    .filter_map(|(k, v)| parse_key(k).map(|q| (q, *v)))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(source) => return Err(ClientError::OffsetStore { path, source }),
        };
        Ok(OffsetStore {
            instance,
            consumer_group: consumer_group.to_string(),
            backend: Backend::Local { path },
            table: Mutex::new(HashMap::new()),
            loaded,
        })
    }

    /// Records a consumed offset; with `increase_only`, never moves it back.
    pub fn update(&self, queue: &MessageQueue, offset: i64, increase_only: bool) {
        let mut table = self.table.lock().unwrap();
        let entry = table.entry(queue.clone()).or_insert(offset);
        if !increase_only || offset > *entry {
            *entry = offset;
        }
    }

    pub fn get(&self, queue: &MessageQueue) -> Option<i64> {
        self.table.lock().unwrap().get(queue).copied()
    }

    /// The committed offset: the broker's (clustering) or the file's (broadcasting).
    pub async fn read_committed(&self, queue: &MessageQueue) -> Result<Option<i64>> {
        match &self.backend {
            Backend::Remote => {
                api::query_consumer_offset(&self.instance, &self.consumer_group, queue).await
            }
            Backend::Local { .. } => Ok(self.loaded.get(queue).copied()),
        }
    }

    /// Commits the offsets of `queues` (oneway for clustering, unless `wait`).
    pub async fn persist(&self, queues: &[MessageQueue], wait: bool) {
        match &self.backend {
            Backend::Remote => {
                for queue in queues {
                    let Some(offset) = self.get(queue) else {
                        continue;
                    };
                    let result = if wait {
                        api::update_consumer_offset(
                            &self.instance,
                            &self.consumer_group,
                            queue,
                            offset,
                        )
                        .await
                    } else {
                        api::update_consumer_offset_oneway(
                            &self.instance,
                            &self.consumer_group,
                            queue,
                            offset,
                        )
                        .await
                    };
                    match result {
                        Ok(()) => debug!(%queue, offset, "offset committed"),
                        Err(e) => warn!(%queue, offset, error = %e, "offset commit failed"),
                    }
                }
            }
            Backend::Local { path } => {
                if let Err(e) = self.write_file(path) {
                    warn!(error = %e, "local offset store write failed");
                }
            }
        }
    }

    fn write_file(&self, path: &Path) -> Result<()> {
        let err = |source| ClientError::OffsetStore {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OffsetFile::default();
        for (q, o) in &self.loaded {
            file.offset_table.insert(key(q), *o);
        }
        for (q, o) in self.table.lock().unwrap().iter() {
            file.offset_table.insert(key(q), *o);
        }
        let dir = path.parent().expect("offsets.json has a parent");
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&serde_json::to_vec_pretty(&file).expect("offsets encode"))
            .map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)?;
        Ok(())
    }

    /// Forgets a queue no longer owned.
    pub fn remove(&self, queue: &MessageQueue) {
        self.table.lock().unwrap().remove(queue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::ClientConfig;

    /// Proves the broadcasting file survives a reopen with every queue's offset, and
    /// that consumption only moves offsets forward.
    #[tokio::test]
    async fn local_offsets_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let instance = ClientInstance::new(ClientConfig::new("127.0.0.1:1")).unwrap();
        let q1 = MessageQueue::new("T", "broker@a", 0);
        let q2 = MessageQueue::new("T", "broker-b", 3);
        let store = OffsetStore::local(instance.clone(), "g", dir.path()).unwrap();
        assert_eq!(store.read_committed(&q1).await.unwrap(), None);
        store.update(&q1, 10, true);
        store.update(&q1, 5, true);
        assert_eq!(store.get(&q1), Some(10));
        store.update(&q1, 5, false);
        assert_eq!(store.get(&q1), Some(5));
        store.update(&q2, 42, true);
        store.persist(&[], false).await;
        let reopened = OffsetStore::local(instance, "g", dir.path()).unwrap();
        assert_eq!(reopened.read_committed(&q1).await.unwrap(), Some(5));
        assert_eq!(reopened.read_committed(&q2).await.unwrap(), Some(42));
        assert!(!dir.path().join("g").join("offsets.json.tmp").exists());
    }
}
