//! The broker's config: RocketMQ-style properties with RocketMQ's DLedger keys, so an
//! existing DLedger config starts a rocketraft node. Every key may be overridden by a
//! command-line flag; unknown keys are reported at start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use remoting::cluster_auth::ClusterAuth;
use remoting::config_file::{ConfigError, Properties};
use remoting::tls::{ClientTls, PeerTls, ServerTls};

/// `flushDiskType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushDiskType {
    SyncFlush,
    AsyncFlush,
}

impl std::str::FromStr for FlushDiskType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "SYNC_FLUSH" => Ok(FlushDiskType::SyncFlush),
            "ASYNC_FLUSH" => Ok(FlushDiskType::AsyncFlush),
            other => Err(format!("`{other}` is neither SYNC_FLUSH nor ASYNC_FLUSH")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `brokerClusterName`.
    pub cluster_name: String,
    /// `brokerName`: the broker group; every member of one Raft group has the same name.
    pub broker_name: String,
    /// `brokerIP1`: the host clients reach this node at.
    pub broker_ip: String,
    /// `listenPort`: clients' port.
    pub listen_port: u16,
    /// `namesrvAddr`: `;`-separated.
    pub namesrv_addr: String,
    /// `storePathRootDir`.
    pub store_path: PathBuf,
    /// `dLegerGroup`: informational; must name this group.
    pub dledger_group: String,
    /// `clusterAuthEnable` and `clusterSecretFile` (rocketraft's keys): the secret this node
    /// proves to its Raft peers and signs its registrations with.
    pub auth: ClusterAuth,
    /// `aclEnable` (RocketMQ's key): every client request must pass RocketMQ's plain ACL.
    pub acl_enable: bool,
    /// `aclFile` (rocketraft's key; RocketMQ reads `$ROCKETMQ_HOME/conf/plain_acl.yml`):
    /// the ACL file, relative to the config file's directory; default `plain_acl.yml`
    /// there. Every `*.yml`/`*.yaml` under an `acl/` directory beside it is read too, as
    /// RocketMQ reads `conf/acl/`.
    pub acl_file: PathBuf,
    /// `compressedRegister` (RocketMQ's key; default true here, false in RocketMQ): send
    /// REGISTER_BROKER's body in its compressed form, so that 100,000 topics fit the name
    /// server's frame limit (their JSON form overflows it at about 45,000).
    pub compressed_register: bool,
    /// `serverChannelMaxIdleTimeSeconds` (RocketMQ's key): a client connection that sent
    /// nothing for this long is closed (0: never).
    pub server_idle_seconds: u64,
    /// `serverMaxConnections` (rocketraft's key): client connections held at once; one
    /// more is closed at accept.
    pub server_max_connections: usize,
    /// `serverMaxHeaderBytes` (rocketraft's key): the largest request header accepted; a
    /// longer one closes its connection before it is parsed.
    pub server_max_header_bytes: usize,
    /// `metricsExporterType=PROM`, `metricsPromExporterHost`, `metricsPromExporterPort`
    /// (RocketMQ 5's keys): where the Prometheus endpoint listens; `None`, the default: off
    /// ([`remoting::metrics_http::exporter_addr`]).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `tls.server.mode` and the `tls.server.*` keys: TLS on the client port.
    pub server_tls: Arc<ServerTls>,
    /// `tls.enable` and the `tls.client.*` keys: TLS to the name servers.
    pub client_tls: Option<Arc<ClientTls>>,
    /// `tls.peer.mode` and the `tls.peer.*` keys (rocketraft's): mutual TLS on the Raft
    /// peer port, the peer handshake inside it; `None` when disabled (the default).
    pub peer_tls: Option<Arc<PeerTls>>,
    /// `dLegerPeers`: `n0-127.0.0.1:40911;n1-...`.
    pub dledger_peers: String,
    /// `dLegerSelfId`: `n0`, `n1`, ...
    pub dledger_self_id: String,
    /// `preferredLeaderId` (DLedger's key): `n0`, `n1`, ... or empty. While another node
    /// leads, it hands leadership to this one once it is alive and caught up. Set it alike
    /// on every member (members preferring each other would hand leadership back and forth).
    pub preferred_leader_id: String,
    /// `joinExistingGroup` (rocketraft's key): this node is new to a running group. It never
    /// starts a group of its own; it waits until the leader adds it (`rocketraft admin
    /// add-node`). Its `dLegerPeers` names the current members and itself.
    pub join_existing_group: bool,
    /// `membershipChangeTimeoutMs` (rocketraft's key): how long the leader waits on each step
    /// of a membership change (a new node's catch-up; each configuration's commit) before
    /// answering; a node still catching up keeps catching up.
    pub membership_change_timeout_ms: u64,
    /// `testCommitLogFlushDelayMs` (rocketraft's key, for tests and benches only): every
    /// CommitLog msync of this node waits this long first, as on a slow disk. 0: none.
    pub test_commit_log_flush_delay_ms: u64,
    /// `testRecordFlushedPosition` (rocketraft's key, for tests only): after every CommitLog
    /// msync, this node records the position below which every byte is msync'd in
    /// `<storePathRootDir>/commitlog/.test-flushed`, so a test can drop exactly the unsynced
    /// bytes as an OS crash would (`chaos::disks::drop_unsynced_commit_log`). Off by default.
    pub test_record_flushed_position: bool,
    /// `flushDiskType`.
    pub flush_disk_type: FlushDiskType,
    /// `flushIntervalCommitLog` (ms): background flush period with ASYNC_FLUSH.
    pub flush_interval_ms: u64,
    /// `flushIntervalConsumeQueue` (ms): how often ConsumeQueue files are synced (their
    /// entries are also in RocksDB's journal until then, so an OS crash loses none).
    pub flush_consume_queue_interval_ms: u64,
    /// `flushConsumeQueueLeastPages`: a sync waits until the queues written since the last
    /// one hold this many pages (4 KiB) of new entries each, on average, or until
    /// `flushConsumeQueueThoroughInterval` has passed (RocketMQ's rule, per queue there).
    /// 0: sync every interval in which anything was written.
    pub flush_consume_queue_least_pages: u64,
    /// `flushConsumeQueueThoroughInterval` (ms): the longest a written entry waits for a sync.
    pub flush_consume_queue_thorough_interval_ms: u64,
    /// `mappedFileSizeCommitLog` (bytes): equal on every member of a group.
    pub commit_log_segment_bytes: u64,
    /// `warmMapedFileEnable` (RocketMQ's spelling): write new CommitLog segments full of
    /// zeros before use (true) or only reserve their blocks with `fallocate` (false).
    pub warm_mapped_file: bool,
    /// `pageCacheWindowCommitLog` (bytes): the newest CommitLog bytes left in the page cache;
    /// older ones are dropped from it once flushed. 0 leaves the cache to the kernel.
    pub page_cache_window: u64,
    /// `mappedFileSizeConsumeQueue` (bytes): a multiple of 20.
    pub consume_queue_file_bytes: u64,
    /// `autoCreateTopicEnable`.
    pub auto_create_topic: bool,
    /// `defaultTopicQueueNums`: queues of an auto-created topic.
    pub default_topic_queue_nums: i32,
    /// `maxMessageSize` (bytes): the largest body accepted.
    pub max_message_bytes: usize,
    /// `registerNameServerPeriod` (ms).
    pub register_namesrv_interval_ms: u64,
    /// `longPollingHoldMaxMs`: the longest a pull with nothing new is held.
    pub pull_hold_ms_max: u64,
    /// `maxHeldPulls` (rocketraft's key): pulls held at once on this node; one more is
    /// answered SYSTEM_BUSY at once (clients retry it after their back-off, 3 s in Java).
    pub max_held_pulls: usize,
    /// `maxHeldPullsPerConnection` (rocketraft's key): the same, per client connection.
    pub max_held_pulls_per_connection: usize,
    /// `maxClientsPerGroup` (rocketraft's key): consumers one group holds on this node; a
    /// heartbeat that would add one more to a full group is answered SYSTEM_ERROR. Each
    /// join notifies every member, so a group's size bounds what one heartbeat can cost.
    pub max_clients_per_group: usize,
    /// `autoCreateTopicLimit` (rocketraft's key): automatic creation (a send to a new topic,
    /// a group's retry and dead-letter topics) stops once the broker holds this many topics;
    /// an admin's UPDATE_AND_CREATE_TOPIC is not limited.
    pub auto_create_topic_limit: usize,
    /// `autoCreateSubscriptionGroupLimit` (rocketraft's key): automatic creation of
    /// subscription groups (a heartbeat or send-back naming a new group, with
    /// `autoCreateSubscriptionGroup`) stops once the broker holds this many groups.
    pub auto_create_group_limit: usize,
    /// `maxPullMsgNums`: most messages in one pull answer.
    pub max_pull_msg_nums: i32,
    /// `maxPullBytes`: most body bytes in one pull answer.
    pub max_pull_bytes: usize,
    /// `consumerOffsetCommitIntervalMs`: how often the leader commits consumer offsets
    /// through the Raft log.
    pub offset_commit_interval_ms: u64,
    /// `clientChannelExpiredTimeMs`: clients silent this long are dropped.
    pub client_expiry_ms: u64,
    /// `dLegerHeartbeatIntervalMs`.
    pub heartbeat_interval_ms: u64,
    /// `dLegerElectionTimeoutMinMs` / `dLegerElectionTimeoutMaxMs`.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// `sendMessageTimeoutMs`: how long a send waits for its Raft commit.
    pub send_timeout_ms: u64,
    /// `messageDelayLevel`: the delay of each level, RocketMQ's form (`1s 5s 10s 30s 1m
    /// ... 2h`; units s, m, h, d). Level n of a message's `DELAY` property is the n-th.
    pub message_delay_level: String,
    /// `timerMaxDelaySec`: the longest delay a timer message (`TIMER_DELIVER_MS`,
    /// `TIMER_DELAY_SEC`, `TIMER_DELAY_MS`) may ask for.
    pub timer_max_delay_sec: u64,
    /// `autoCreateSubscriptionGroup`: a consumer group the broker has not seen may send
    /// messages back for retry (its subscription group is created with defaults).
    pub auto_create_subscription_group: bool,
    /// `rebalanceLockMaxLiveTime` (ms): how long a queue lock of an orderly consumer holds
    /// without renewal (RocketMQ's `rocketmq.broker.rebalance.lockMaxLiveTime`).
    pub rebalance_lock_max_live_ms: u64,
    /// `messageIndexEnable`: index every message's KEYS and UNIQ_KEY at apply for
    /// QUERY_MESSAGE (RocketMQ's switch, on by default). The index costs the send path
    /// (docs/PERFORMANCE.md); set it alike on every member of a group.
    pub message_index_enable: bool,
    /// `slaveReadEnable`: a consumer reading far behind (its pull's last message more than
    /// `accessMessageInMemoryMaxRatio` % of physical memory behind the CommitLog's end) is
    /// told to pull from a follower (`suggestWhichBrokerId`), and back from the leader
    /// once it has caught up. Off, as in RocketMQ.
    pub slave_read_enable: bool,
    /// `accessMessageInMemoryMaxRatio` (%, 0-100): see `slave_read_enable`.
    pub access_message_in_memory_max_ratio: u32,
    /// `enablePropertyFilter`: serve SQL92 subscriptions (filter each message's
    /// properties on the broker). Off, as in RocketMQ: a SQL92 pull or
    /// CHECK_CLIENT_CONFIG is refused with SYSTEM_ERROR.
    pub enable_property_filter: bool,
    /// `transactionTimeOut` (ms): a half message younger than this (by its born time) is
    /// not checked back, unless its `CHECK_IMMUNITY_TIME_IN_SECONDS` says otherwise.
    pub transaction_timeout_ms: u64,
    /// `transactionCheckInterval` (ms): how often the leader looks for unresolved halves.
    pub transaction_check_interval_ms: u64,
    /// `transactionCheckMax`: check-backs of one half before it is discarded to
    /// `TRANS_CHECK_MAX_TIME_TOPIC`.
    pub transaction_check_max: u32,
    /// `fileReservedTime` (hours): a CommitLog segment whose last write is older than this is
    /// expired, and goes at the `deleteWhen` hour or once the disk is `diskMaxUsedSpaceRatio`
    /// full (see [`crate::retention`]).
    pub file_reserved_time_hours: u64,
    /// `fileReservedTimeSeconds`: rocketraft's own key, not RocketMQ's; when set it replaces
    /// `fileReservedTime` with a reservation in seconds (tests, and operators who need
    /// finer than hours).
    pub file_reserved_time_seconds: Option<u64>,
    /// `deleteWhen`: the hours (local time, `;`-separated, e.g. `04;05`) at which expired
    /// segments are deleted; `*` (rocketraft's, not RocketMQ's) means every hour.
    pub delete_when: String,
    /// `diskMaxUsedSpaceRatio` (%): at or above this disk usage, expired segments are deleted
    /// at any hour.
    pub disk_max_used_space_ratio: u32,
    /// `diskSpaceCleanForciblyRatio` (%): above this usage, the oldest segments are deleted
    /// even if not expired (RocketMQ 4.x reads it from the system property
    /// `rocketmq.broker.diskSpaceCleanForciblyRatio`, 5.x from this key).
    pub disk_space_clean_forcibly_ratio: u32,
    /// `diskSpaceWarningLevelRatio` (%): above this usage sends are refused until usage is
    /// below it again.
    pub disk_space_warning_level_ratio: u32,
    /// `cleanResourceInterval` (ms): how often the leader decides retention.
    pub clean_resource_interval_ms: u64,
}

/// RocketMQ's default `messageDelayLevel`.
pub const DEFAULT_DELAY_LEVELS: &str = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";

/// The delays of `messageDelayLevel` in ms, level 1 first.
pub fn parse_delay_levels(text: &str) -> Result<Vec<u64>, String> {
    let mut levels = Vec::new();
    for word in text.split_whitespace() {
        let split = word.len() - word.chars().last().map_or(0, char::len_utf8);
        let (number, unit) = word.split_at(split);
        let unit_ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("`{word}`: the unit must be s, m, h or d")),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("`{word}`: `{number}` is not a whole number"))?;
        levels.push(n * unit_ms);
    }
    if levels.is_empty() {
        return Err("no levels".into());
    }
    Ok(levels)
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            cluster_name: "DefaultCluster".into(),
            broker_name: "broker-a".into(),
            broker_ip: "127.0.0.1".into(),
            listen_port: 10911,
            namesrv_addr: "127.0.0.1:9876".into(),
            store_path: PathBuf::from("store"),
            dledger_group: "broker-a".into(),
            auth: ClusterAuth::default(),
            acl_enable: false,
            compressed_register: true,
            server_idle_seconds: remoting::connection::DEFAULT_IDLE_TIMEOUT_MS / 1000,
            server_max_connections: remoting::connection::DEFAULT_MAX_CONNECTIONS,
            server_max_header_bytes: remoting::codec::DEFAULT_MAX_HEADER_BYTES,
            metrics_addr: None,
            acl_file: PathBuf::from("plain_acl.yml"),
            server_tls: Arc::default(),
            client_tls: None,
            peer_tls: None,
            dledger_peers: "n0-127.0.0.1:40911".into(),
            dledger_self_id: "n0".into(),
            preferred_leader_id: String::new(),
            join_existing_group: false,
            membership_change_timeout_ms: 60_000,
            test_commit_log_flush_delay_ms: 0,
            test_record_flushed_position: false,
            flush_disk_type: FlushDiskType::SyncFlush,
            flush_interval_ms: 500,
            flush_consume_queue_interval_ms: 1_000,
            flush_consume_queue_least_pages: 2,
            flush_consume_queue_thorough_interval_ms: 60_000,
            commit_log_segment_bytes: 1 << 30,
            warm_mapped_file: true,
            page_cache_window: 64 << 20,
            consume_queue_file_bytes: 300_000 * 20,
            auto_create_topic: true,
            default_topic_queue_nums: 8,
            max_message_bytes: 4 * 1024 * 1024,
            register_namesrv_interval_ms: 30_000,
            pull_hold_ms_max: 30_000,
            max_held_pulls: 100_000,
            max_held_pulls_per_connection: 16_384,
            max_clients_per_group: 1_000,
            auto_create_topic_limit: 10_000,
            auto_create_group_limit: 10_000,
            max_pull_msg_nums: 64,
            max_pull_bytes: 4 * 1024 * 1024,
            offset_commit_interval_ms: 200,
            client_expiry_ms: 120_000,
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            send_timeout_ms: 3000,
            message_delay_level: DEFAULT_DELAY_LEVELS.into(),
            timer_max_delay_sec: 3 * 24 * 3600,
            auto_create_subscription_group: true,
            rebalance_lock_max_live_ms: 60_000,
            message_index_enable: true,
            slave_read_enable: false,
            access_message_in_memory_max_ratio: 40,
            enable_property_filter: false,
            transaction_timeout_ms: 6_000,
            transaction_check_interval_ms: 60_000,
            transaction_check_max: 15,
            file_reserved_time_hours: 72,
            file_reserved_time_seconds: None,
            delete_when: "04".into(),
            disk_max_used_space_ratio: 75,
            disk_space_clean_forcibly_ratio: 85,
            disk_space_warning_level_ratio: 90,
            clean_resource_interval_ms: 10_000,
        }
    }
}

/// The flags of `rocketraft broker` that override a config key: (flags, key). One table for
/// the command line and for the chaos tool, which reads a running broker's command line
/// back into a config when it attaches to a cluster.
pub const OVERRIDE_FLAGS: &[(&[&str], &str)] = &[
    (&["--listen-port"], "listenPort"),
    (&["--store-path"], "storePathRootDir"),
    (&["-n", "--namesrv"], "namesrvAddr"),
    (&["--self-id"], "dLegerSelfId"),
    (&["--peers"], "dLegerPeers"),
    (&["--flush-disk-type"], "flushDiskType"),
];

/// The config key a `rocketraft broker` flag overrides, if it is one of [`OVERRIDE_FLAGS`].
pub fn override_key(flag: &str) -> Option<&'static str> {
    OVERRIDE_FLAGS
        .iter()
        .find(|(flags, _)| flags.contains(&flag))
        .map(|(_, key)| *key)
}

/// RocketMQ keys that rocketraft accepts and ignores, because Raft makes them moot.
const IGNORED_KEYS: &[&str] = &[
    "brokerId",
    "brokerRole",
    "storePathCommitLog",
    "sendMessageThreadPoolNums",
    "pullMessageThreadPoolNums",
];

impl BrokerConfig {
    /// The ACL files, in the order they are merged: `aclFile`, then every `*.yml` and
    /// `*.yaml` under the `acl/` directory beside it (recursively, sorted by path).
    pub fn acl_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.acl_file.clone()];
        let dir = self.acl_file.parent().unwrap_or(Path::new("")).join("acl");
        let mut more = Vec::new();
        let mut pending = vec![dir];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                    more.push(path);
                }
            }
        }
        more.sort();
        files.extend(more);
        files
    }

    /// Reads a config file; returns the config, keys it did not know, and RocketMQ keys
    /// it accepted but ignores.
    pub fn load(path: &Path) -> Result<(Self, Vec<String>, Vec<String>), ConfigError> {
        Self::from_properties(Properties::load(path)?)
    }

    pub fn from_properties(
        mut p: Properties,
    ) -> Result<(Self, Vec<String>, Vec<String>), ConfigError> {
        let mut c = BrokerConfig::default();
        macro_rules! set {
            ($key:literal, $field:ident) => {
                if let Some(v) = p.take($key)? {
                    c.$field = v;
                }
            };
        }
        set!("brokerClusterName", cluster_name);
        set!("brokerName", broker_name);
        c.dledger_group = c.broker_name.clone();
        set!("brokerIP1", broker_ip);
        set!("listenPort", listen_port);
        set!("namesrvAddr", namesrv_addr);
        set!("storePathRootDir", store_path);
        set!("dLegerGroup", dledger_group);
        set!("dLegerPeers", dledger_peers);
        c.auth = ClusterAuth::from_properties(&mut p)?;
        set!("aclEnable", acl_enable);
        set!("compressedRegister", compressed_register);
        set!("serverChannelMaxIdleTimeSeconds", server_idle_seconds);
        set!("serverMaxConnections", server_max_connections);
        set!("serverMaxHeaderBytes", server_max_header_bytes);
        c.metrics_addr = remoting::metrics_http::exporter_addr(&mut p)?;
        let acl_file: String = p.take("aclFile")?.unwrap_or_else(|| "plain_acl.yml".into());
        c.acl_file = remoting::cluster_auth::resolve_config_path(&p.origin, acl_file.trim());
        // Before the client port's TLS, which takes the keys peer TLS falls back to.
        c.peer_tls = PeerTls::from_properties(&mut p)?.map(Arc::new);
        c.server_tls = Arc::new(ServerTls::from_properties(&mut p)?);
        c.client_tls = ClientTls::from_properties(&mut p)?.map(Arc::new);
        set!("dLegerSelfId", dledger_self_id);
        set!("preferredLeaderId", preferred_leader_id);
        set!("joinExistingGroup", join_existing_group);
        set!("membershipChangeTimeoutMs", membership_change_timeout_ms);
        set!("testCommitLogFlushDelayMs", test_commit_log_flush_delay_ms);
        set!("testRecordFlushedPosition", test_record_flushed_position);
        set!("flushDiskType", flush_disk_type);
        set!("flushIntervalCommitLog", flush_interval_ms);
        set!("flushIntervalConsumeQueue", flush_consume_queue_interval_ms);
        set!(
            "flushConsumeQueueLeastPages",
            flush_consume_queue_least_pages
        );
        set!(
            "flushConsumeQueueThoroughInterval",
            flush_consume_queue_thorough_interval_ms
        );
        set!("mappedFileSizeCommitLog", commit_log_segment_bytes);
        set!("warmMapedFileEnable", warm_mapped_file);
        set!("pageCacheWindowCommitLog", page_cache_window);
        set!("mappedFileSizeConsumeQueue", consume_queue_file_bytes);
        set!("autoCreateTopicEnable", auto_create_topic);
        set!("defaultTopicQueueNums", default_topic_queue_nums);
        set!("maxMessageSize", max_message_bytes);
        set!("registerNameServerPeriod", register_namesrv_interval_ms);
        set!("longPollingHoldMaxMs", pull_hold_ms_max);
        set!("maxHeldPulls", max_held_pulls);
        set!("maxHeldPullsPerConnection", max_held_pulls_per_connection);
        set!("maxClientsPerGroup", max_clients_per_group);
        set!("autoCreateTopicLimit", auto_create_topic_limit);
        set!("autoCreateSubscriptionGroupLimit", auto_create_group_limit);
        set!("maxPullMsgNums", max_pull_msg_nums);
        set!("maxPullBytes", max_pull_bytes);
        set!("consumerOffsetCommitIntervalMs", offset_commit_interval_ms);
        set!("clientChannelExpiredTimeMs", client_expiry_ms);
        set!("dLegerHeartbeatIntervalMs", heartbeat_interval_ms);
        set!("dLegerElectionTimeoutMinMs", election_timeout_min_ms);
        set!("dLegerElectionTimeoutMaxMs", election_timeout_max_ms);
        set!("sendMessageTimeoutMs", send_timeout_ms);
        set!("messageDelayLevel", message_delay_level);
        set!("timerMaxDelaySec", timer_max_delay_sec);
        set!(
            "autoCreateSubscriptionGroup",
            auto_create_subscription_group
        );
        set!("rebalanceLockMaxLiveTime", rebalance_lock_max_live_ms);
        set!("messageIndexEnable", message_index_enable);
        set!("enablePropertyFilter", enable_property_filter);
        set!("slaveReadEnable", slave_read_enable);
        set!(
            "accessMessageInMemoryMaxRatio",
            access_message_in_memory_max_ratio
        );
        set!("transactionTimeOut", transaction_timeout_ms);
        set!("transactionCheckInterval", transaction_check_interval_ms);
        set!("transactionCheckMax", transaction_check_max);
        set!("fileReservedTime", file_reserved_time_hours);
        if let Some(seconds) = p.take("fileReservedTimeSeconds")? {
            c.file_reserved_time_seconds = Some(seconds);
        }
        set!("deleteWhen", delete_when);
        set!("diskMaxUsedSpaceRatio", disk_max_used_space_ratio);
        set!(
            "diskSpaceCleanForciblyRatio",
            disk_space_clean_forcibly_ratio
        );
        set!("diskSpaceWarningLevelRatio", disk_space_warning_level_ratio);
        set!("cleanResourceInterval", clean_resource_interval_ms);
        let enable: Option<bool> = p.take("enableDLegerCommitLog")?;
        if enable == Some(false) {
            return Err(ConfigError::BadValue {
                origin: p.origin.clone(),
                key: "enableDLegerCommitLog".into(),
                value: "false".into(),
                reason: "rocketraft always replicates the CommitLog with Raft".into(),
            });
        }
        let mut ignored = Vec::new();
        for key in IGNORED_KEYS {
            if p.take::<String>(key)?.is_some() {
                ignored.push(key.to_string());
            }
        }
        c.validate(&p.origin)?;
        Ok((c, p.unknown_keys(), ignored))
    }

    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, value: String, reason: &str| ConfigError::BadValue {
            origin: origin.into(),
            key: key.into(),
            value,
            reason: reason.into(),
        };
        if self.consume_queue_file_bytes == 0 || self.consume_queue_file_bytes % 20 != 0 {
            return Err(bad(
                "mappedFileSizeConsumeQueue",
                self.consume_queue_file_bytes.to_string(),
                "must be a positive multiple of 20",
            ));
        }
        if !(1..=1024).contains(&self.default_topic_queue_nums) {
            return Err(bad(
                "defaultTopicQueueNums",
                self.default_topic_queue_nums.to_string(),
                "must be in 1..=1024",
            ));
        }
        if self.max_pull_msg_nums < 1 {
            return Err(bad(
                "maxPullMsgNums",
                self.max_pull_msg_nums.to_string(),
                "must be >= 1",
            ));
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > 64 << 20 {
            return Err(bad(
                "maxMessageSize",
                self.max_message_bytes.to_string(),
                "must be in 1..=64 MiB",
            ));
        }
        if let Err(reason) = parse_delay_levels(&self.message_delay_level) {
            return Err(bad(
                "messageDelayLevel",
                self.message_delay_level.clone(),
                &reason,
            ));
        }
        if let Err(reason) = crate::retention::parse_delete_when(&self.delete_when) {
            return Err(bad("deleteWhen", self.delete_when.clone(), &reason));
        }
        for (key, ratio) in [
            ("diskMaxUsedSpaceRatio", self.disk_max_used_space_ratio),
            (
                "diskSpaceCleanForciblyRatio",
                self.disk_space_clean_forcibly_ratio,
            ),
            (
                "diskSpaceWarningLevelRatio",
                self.disk_space_warning_level_ratio,
            ),
        ] {
            if !(1..=100).contains(&ratio) {
                return Err(bad(
                    key,
                    ratio.to_string(),
                    "must be a percentage in 1..=100",
                ));
            }
        }
        if self.access_message_in_memory_max_ratio > 100 {
            return Err(bad(
                "accessMessageInMemoryMaxRatio",
                self.access_message_in_memory_max_ratio.to_string(),
                "must be a percentage in 0..=100",
            ));
        }
        if self.clean_resource_interval_ms == 0 {
            return Err(bad("cleanResourceInterval", "0".into(), "must be >= 1 ms"));
        }
        if self.dledger_group != self.broker_name {
            return Err(bad(
                "dLegerGroup",
                self.dledger_group.clone(),
                "must equal brokerName: one broker group is one Raft group",
            ));
        }
        Ok(())
    }

    /// The delays of `messageDelayLevel` in ms (checked when the config was loaded).
    pub fn delay_levels_ms(&self) -> Vec<u64> {
        parse_delay_levels(&self.message_delay_level)
            .unwrap_or_else(|_| parse_delay_levels(DEFAULT_DELAY_LEVELS).expect("valid"))
    }

    /// How long a CommitLog segment is kept after its last write (`fileReservedTime`, or
    /// `fileReservedTimeSeconds` when set), in ms.
    pub fn file_reserved_ms(&self) -> u64 {
        match self.file_reserved_time_seconds {
            Some(seconds) => seconds.saturating_mul(1000),
            None => self.file_reserved_time_hours.saturating_mul(3_600_000),
        }
    }

    /// The address clients reach this node at.
    pub fn broker_addr(&self) -> String {
        format!("{}:{}", self.broker_ip, self.listen_port)
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        format!("{}:{}", self.broker_ip, self.listen_port)
            .parse()
            .map_err(|e| format!("brokerIP1 `{}`: {e}", self.broker_ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dledger_keys_parse_and_unknown_keys_are_reported() {
        let text = "brokerClusterName=C\nbrokerName=g\nlistenPort=10921\nenableDLegerCommitLog=true\n\
                    dLegerGroup=g\ndLegerPeers=n0-127.0.0.1:40911;n1-127.0.0.1:40912\ndLegerSelfId=n1\n\
                    flushDiskType=SYNC_FLUSH\nbrokerRole=ASYNC_MASTER\ntypo=1\nwarmMapedFileEnable=false\n\
                    pageCacheWindowCommitLog=0\n";
        let (c, unknown, ignored) =
            BrokerConfig::from_properties(Properties::parse("b.conf", text).unwrap()).unwrap();
        assert_eq!(c.broker_addr(), "127.0.0.1:10921");
        assert_eq!(c.flush_disk_type, FlushDiskType::SyncFlush);
        assert_eq!(c.dledger_self_id, "n1");
        assert!(!c.warm_mapped_file);
        assert!(BrokerConfig::default().warm_mapped_file);
        assert_eq!(c.page_cache_window, 0);
        assert_eq!(BrokerConfig::default().page_cache_window, 64 << 20);
        assert_eq!(unknown, vec!["b.conf:10: typo".to_string()]);
        assert_eq!(ignored, vec!["brokerRole".to_string()]);
    }

    /// RocketMQ's stock DLedger config (its `conf/dledger/broker-n0.conf`) written in the
    /// looser forms Java's `Properties.load` also reads (`key : value`, `key value`, escapes,
    /// a continued line, a repeated key) loads to the same config as its `key=value` form.
    #[test]
    fn a_stock_dledger_config_in_java_forms_loads_as_its_plain_form() {
        let plain = "brokerClusterName=RaftCluster\nbrokerName=RaftNode00\nlistenPort=30911\n\
                     namesrvAddr=127.0.0.1:9876\nstorePathRootDir=/tmp/rmqstore/node00\n\
                     storePathCommitLog=/tmp/rmqstore/node00/commitlog\n\
                     enableDLegerCommitLog=true\ndLegerGroup=RaftNode00\n\
                     dLegerPeers=n0-127.0.0.1:40911;n1-127.0.0.1:40912;n2-127.0.0.1:40913\n\
                     ## must be unique\ndLegerSelfId=n0\nsendMessageThreadPoolNums=16\n";
        let java = "brokerClusterName : RaftCluster\r\n\
                    brokerName\tRaftNode00\r\n\
                    listenPort 30911\n\
                    namesrvAddr=127.0.0.1\\:9876\n\
                    \x20  storePathRootDir = /tmp/rmqstore/node00\n\
                    storePathCommitLog:/tmp/rmqstore/node00/commitlog\n\
                    ! enableDLegerCommitLog=false\n\
                    enableDLegerCommitLog = true\n\
                    dLeger\\u0047roup=RaftNode00\n\
                    dLegerPeers=n0-127.0.0.1:40911;\\\n\
                    \x20           n1-127.0.0.1:40912;\\\n\
                    \x20           n2-127.0.0.1:40913\n\
                    ## must be unique\n\
                    dLegerSelfId=n2\n\
                    dLegerSelfId=n0\n\
                    sendMessageThreadPoolNums=16";
        let load = |text| {
            let props = Properties::parse("broker-n0.conf", text).unwrap();
            let duplicates = props.duplicate_keys().to_vec();
            let (c, unknown, ignored) = BrokerConfig::from_properties(props).unwrap();
            assert!(unknown.is_empty(), "{unknown:?}");
            assert_eq!(ignored, ["storePathCommitLog", "sendMessageThreadPoolNums"]);
            (c, duplicates)
        };
        let (from_plain, _) = load(plain);
        let (from_java, duplicates) = load(java);
        assert_eq!(from_java.dledger_group, "RaftNode00");
        assert_eq!(from_java.dledger_self_id, "n0");
        assert_eq!(
            from_java.dledger_peers,
            "n0-127.0.0.1:40911;n1-127.0.0.1:40912;n2-127.0.0.1:40913"
        );
        // Every field: BrokerConfig has no `PartialEq` (it holds TLS state), its `Debug`
        // shows them all.
        assert_eq!(format!("{from_java:?}"), format!("{from_plain:?}"));
        assert_eq!(
            duplicates,
            ["broker-n0.conf:15: dLegerSelfId (also set at line 14; this later value is used)"]
        );
    }

    /// Retention keys keep RocketMQ's names and defaults; `fileReservedTimeSeconds`
    /// (rocketraft's) replaces `fileReservedTime` when set; the shipped configs load clean.
    #[test]
    fn retention_keys() {
        let d = BrokerConfig::default();
        assert_eq!(d.file_reserved_ms(), 72 * 3_600_000);
        assert_eq!(d.delete_when, "04");
        assert_eq!(
            (
                d.disk_max_used_space_ratio,
                d.disk_space_clean_forcibly_ratio,
                d.disk_space_warning_level_ratio,
                d.clean_resource_interval_ms
            ),
            (75, 85, 90, 10_000)
        );
        let text = "fileReservedTime=48\ndeleteWhen=04;05\ndiskMaxUsedSpaceRatio=70\n\
                    diskSpaceCleanForciblyRatio=80\ndiskSpaceWarningLevelRatio=95\n\
                    cleanResourceInterval=500\n";
        let (c, unknown, ignored) =
            BrokerConfig::from_properties(Properties::parse("b.conf", text).unwrap()).unwrap();
        assert!(
            unknown.is_empty() && ignored.is_empty(),
            "{unknown:?} {ignored:?}"
        );
        assert_eq!(c.file_reserved_ms(), 48 * 3_600_000);
        assert_eq!(c.delete_when, "04;05");
        assert_eq!(c.disk_space_warning_level_ratio, 95);
        assert_eq!(c.clean_resource_interval_ms, 500);
        let text = "fileReservedTime=48\nfileReservedTimeSeconds=3\ndeleteWhen=*\n";
        let (c, _, _) =
            BrokerConfig::from_properties(Properties::parse("b.conf", text).unwrap()).unwrap();
        assert_eq!(c.file_reserved_ms(), 3_000);
        for shipped in ["broker-n0.conf", "broker-n1.conf", "broker-n2.conf"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../conf")
                .join(shipped);
            let (_, unknown, ignored) = BrokerConfig::load(&path).unwrap();
            assert!(unknown.is_empty(), "{shipped}: {unknown:?}");
            assert!(ignored.is_empty(), "{shipped}: {ignored:?}");
        }
    }

    #[test]
    fn delay_levels_read_as_rocketmq_writes_them() {
        let levels = parse_delay_levels(DEFAULT_DELAY_LEVELS).unwrap();
        assert_eq!(levels.len(), 18);
        assert_eq!(levels[0], 1_000);
        assert_eq!(levels[4], 60_000);
        assert_eq!(levels[17], 7_200_000);
        assert_eq!(
            parse_delay_levels("100s 1d").unwrap(),
            vec![100_000, 86_400_000]
        );
        assert!(parse_delay_levels("1w").is_err());
    }

    #[test]
    fn bad_values_are_clear_errors() {
        for text in [
            "enableDLegerCommitLog=false",
            "flushDiskType=SOMETIMES",
            "mappedFileSizeConsumeQueue=30",
            "brokerName=a\ndLegerGroup=b",
            "listenPort=99999",
            "warmMapedFileEnable=maybe",
            "pageCacheWindowCommitLog=-1",
            "messageDelayLevel=1s 5x",
            "messageDelayLevel=",
            "deleteWhen=25",
            "deleteWhen=",
            "diskMaxUsedSpaceRatio=0",
            "diskSpaceWarningLevelRatio=101",
            "fileReservedTimeSeconds=-1",
            "cleanResourceInterval=0",
            "slaveReadEnable=sometimes",
            "accessMessageInMemoryMaxRatio=101",
            "accessMessageInMemoryMaxRatio=-1",
            "accessMessageInMemoryMaxRatio=40%",
        ] {
            let err = BrokerConfig::from_properties(Properties::parse("b.conf", text).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains("b.conf"), "{err}");
            // The error names the key at fault (the last line's).
            let key = text.lines().last().unwrap().split('=').next().unwrap();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
