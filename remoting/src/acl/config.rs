//! [`PlainAcl`]: the rules of one or several `plain_acl.yml` files.
//!
//! ```yaml
//! globalWhiteRemoteAddresses: [10.10.103.*]   # these addresses skip every check
//! accounts:
//!   - accessKey: RocketMQ                      # both keys longer than 6 characters
//!     secretKey: 12345678
//!     whiteRemoteAddress: 192.168.1.*          # skips signature and permissions
//!     admin: false                             # admin-only codes; all resources if no *Perms
//!     defaultTopicPerm: DENY                   # PUB, SUB, PUB|SUB, SUB|PUB, DENY; missing: DENY
//!     defaultGroupPerm: SUB
//!     topicPerms: [topicA=DENY, topicB=PUB|SUB]
//!     groupPerms: [groupA=SUB]                 # kept as the resource %RETRY%groupA
//! dataVersion: [{counter: 1, timestamp: 0}]   # written by RocketMQ's admin commands; ignored
//! ```
//!
//! Unknown keys are logged and ignored; every other mistake is an [`AclError`] naming the
//! file and the account. Secret keys never appear in errors, logs or `Debug`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::address::AddressPattern;
use super::RETRY_GROUP_TOPIC_PREFIX;

/// The largest ACL file read; RocketMQ's are a few kilobytes.
pub const MAX_ACL_FILE_BYTES: u64 = 16 << 20;

const GLOBAL_WHITE_REMOTE_ADDRESSES: &str = "globalWhiteRemoteAddresses";
const ACCOUNTS: &str = "accounts";
const DATA_VERSION: &str = "dataVersion";
const ACCOUNT_KEYS: [&str; 8] = [
    "accessKey",
    "secretKey",
    "whiteRemoteAddress",
    "admin",
    "defaultTopicPerm",
    "defaultGroupPerm",
    "topicPerms",
    "groupPerms",
];
/// Access and secret keys must be longer than this (`AclConstants.*_KEY_MIN_LENGTH`).
const KEY_MIN_CHARS_EXCLUSIVE: usize = 6;

/// Why ACL rules could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: larger than {max_bytes} bytes")]
    TooLarge { file: String, max_bytes: u64 },
    #[error("{file}: not valid YAML: {reason}")]
    Yaml { file: String, reason: String },
    /// The file's top level or `accounts` has the wrong shape.
    #[error("{file}: {reason}")]
    Layout { file: String, reason: String },
    #[error("{file}: globalWhiteRemoteAddresses: {reason}")]
    GlobalWhiteAddress { file: String, reason: String },
    /// `account` is the access key in backquotes, or `#N` (1-based) if it has none.
    #[error("{file}: account {account}: {reason}")]
    Account {
        file: String,
        account: String,
        reason: String,
    },
}

/// RocketMQ's `Permission` bits: what an account holds on a resource, or what a request
/// needs (PUB or SUB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Perm(u8);

impl Perm {
    pub(crate) const DENY: Perm = Perm(1);
    pub(crate) const PUB: Perm = Perm(1 << 2);
    pub(crate) const SUB: Perm = Perm(1 << 3);
    const PUB_SUB: Perm = Perm(Self::PUB.0 | Self::SUB.0);

    /// A permission string; missing or blank is DENY, as in RocketMQ. An unknown string is
    /// an error here (RocketMQ reads it as DENY, hiding the typo).
    fn parse(text: Option<&str>) -> Result<Perm, String> {
        match text.map(str::trim) {
            None | Some("") | Some("DENY") => Ok(Perm::DENY),
            Some("PUB") => Ok(Perm::PUB),
            Some("SUB") => Ok(Perm::SUB),
            Some("PUB|SUB" | "SUB|PUB") => Ok(Perm::PUB_SUB),
            Some(other) => Err(format!(
                "`{other}` is not a permission (PUB, SUB, PUB|SUB, SUB|PUB or DENY)"
            )),
        }
    }

    /// `Permission.checkPermission` for a needed PUB or SUB: DENY refuses, else any bit
    /// in common grants.
    pub(crate) fn grants(self, needed: Perm) -> bool {
        self.0 & Perm::DENY.0 == 0 && self.0 & needed.0 != 0
    }

    fn name(self) -> &'static str {
        match self {
            Perm::PUB => "PUB",
            Perm::SUB => "SUB",
            Perm::PUB_SUB => "PUB|SUB",
            _ => "DENY",
        }
    }
}

/// One entry of `accounts`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) white_remote_address: AddressPattern,
    pub(crate) admin: bool,
    pub(crate) default_topic_perm: Perm,
    pub(crate) default_group_perm: Perm,
    /// `topicPerms` by topic and `groupPerms` by `%RETRY%<group>`.
    pub(crate) resource_perms: BTreeMap<String, Perm>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("access_key", &self.access_key)
            .field("white_remote_address", &self.white_remote_address)
            .field("admin", &self.admin)
            .field("default_topic_perm", &self.default_topic_perm)
            .field("default_group_perm", &self.default_group_perm)
            .field("resource_perms", &self.resource_perms)
            .finish_non_exhaustive()
    }
}

/// The rules of RocketMQ's plain ACL, from one or several `plain_acl.yml` files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlainAcl {
    pub(crate) global_white_remote_addresses: Vec<AddressPattern>,
    pub(crate) accounts: BTreeMap<String, Account>,
}

impl PlainAcl {
    /// Reads the rules of one file; `file` names it in errors and logs. An empty file has
    /// no rules (every request is refused).
    pub fn parse(text: &str, file: &str) -> Result<PlainAcl, AclError> {
        let root: Value = serde_yaml::from_str(text).map_err(|e| AclError::Yaml {
            file: file.into(),
            reason: e.to_string(),
        })?;
        let root = match root {
            Value::Null => Mapping::new(),
            Value::Mapping(map) => map,
            _ => {
                return Err(layout(
                    file,
                    "the top level must be a mapping (globalWhiteRemoteAddresses, accounts)",
                ))
            }
        };
        let mut acl = PlainAcl::default();
        for (key, value) in &root {
            match key.as_str() {
                Some(GLOBAL_WHITE_REMOTE_ADDRESSES) => {
                    acl.global_white_remote_addresses = parse_global_whitelist(file, value)?
                }
                Some(ACCOUNTS) => acl.accounts = parse_accounts(file, value)?,
                Some(DATA_VERSION) => {}
                _ => {
                    tracing::warn!(file, key = %key_text(key), "unknown key in an ACL file; ignored")
                }
            }
        }
        Ok(acl)
    }

    /// Reads and merges several files as RocketMQ does: every file's global whitelist
    /// counts; an accessKey already defined by an earlier file is ignored, with a
    /// warning. A missing file is an error (RocketMQ creates its default file empty).
    pub fn load(paths: &[PathBuf]) -> Result<PlainAcl, AclError> {
        let mut merged = PlainAcl::default();
        let mut defined_in: BTreeMap<String, String> = BTreeMap::new();
        for path in paths {
            let file = path.display().to_string();
            let acl = PlainAcl::parse(&read_acl_file(path, &file)?, &file)?;
            merged
                .global_white_remote_addresses
                .extend(acl.global_white_remote_addresses);
            for (access_key, account) in acl.accounts {
                if let Some(first_file) = defined_in.get(&access_key) {
                    tracing::warn!(
                        access_key,
                        file,
                        first_file,
                        "accessKey already defined by an earlier ACL file; this one is ignored"
                    );
                    continue;
                }
                defined_in.insert(access_key.clone(), file.clone());
                merged.accounts.insert(access_key, account);
            }
        }
        Ok(merged)
    }

    /// The access keys of every account, sorted.
    pub fn access_keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.accounts.keys().map(String::as_str)
    }

    /// A hex SHA-256 of the rules in a canonical form: equal for files that grant the same
    /// access however they are written (order of accounts and lists, spelling of
    /// addresses and permissions, comments, `dataVersion`), different otherwise, so the
    /// brokers of a group can compare what they enforce. It covers the secret keys: to
    /// confirm a guessed secret against it, one must know every other rule and secret.
    pub fn fingerprint(&self) -> String {
        #[derive(serde::Serialize)]
        struct Rules<'a> {
            global_white_remote_addresses: BTreeSet<String>,
            accounts: BTreeMap<&'a str, AccountRules<'a>>,
        }
        #[derive(serde::Serialize)]
        struct AccountRules<'a> {
            secret_key: &'a str,
            white_remote_address: String,
            admin: bool,
            default_topic_perm: &'static str,
            default_group_perm: &'static str,
            resource_perms: BTreeMap<&'a str, &'static str>,
        }
        let rules = Rules {
            global_white_remote_addresses: self
                .global_white_remote_addresses
                .iter()
                .filter(|pattern| **pattern != AddressPattern::Never)
                .map(AddressPattern::to_string)
                .collect(),
            accounts: self
                .accounts
                .iter()
                .map(|(access_key, account)| {
                    let rules = AccountRules {
                        secret_key: &account.secret_key,
                        white_remote_address: account.white_remote_address.to_string(),
                        admin: account.admin,
                        default_topic_perm: account.default_topic_perm.name(),
                        default_group_perm: account.default_group_perm.name(),
                        resource_perms: account
                            .resource_perms
                            .iter()
                            .map(|(resource, perm)| (resource.as_str(), perm.name()))
                            .collect(),
                    };
                    (access_key.as_str(), rules)
                })
                .collect(),
        };
        let canonical = serde_json::to_vec(&rules).expect("strings, booleans and maps encode");
        ring::digest::digest(&ring::digest::SHA256, &canonical)
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

fn layout(file: &str, reason: &str) -> AclError {
    AclError::Layout {
        file: file.into(),
        reason: reason.into(),
    }
}

fn read_acl_file(path: &Path, file: &str) -> Result<String, AclError> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_ACL_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(|source| AclError::Read {
            file: file.into(),
            source,
        })?;
    if text.len() as u64 > MAX_ACL_FILE_BYTES {
        return Err(AclError::TooLarge {
            file: file.into(),
            max_bytes: MAX_ACL_FILE_BYTES,
        });
    }
    Ok(text)
}

/// A YAML scalar as the string RocketMQ's loader makes of it (`secretKey: 12345678`).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn key_text(key: &Value) -> String {
    scalar_text(key).unwrap_or_else(|| format!("{key:?}"))
}

/// A list of scalars; a missing list is empty.
fn string_list(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items
            .iter()
            .map(|item| scalar_text(item).ok_or_else(|| "must be a list of strings".to_string()))
            .collect(),
        _ => Err("must be a list".into()),
    }
}

fn parse_global_whitelist(file: &str, value: &Value) -> Result<Vec<AddressPattern>, AclError> {
    let error = |reason: String| AclError::GlobalWhiteAddress {
        file: file.into(),
        reason,
    };
    string_list(value)
        .map_err(error)?
        .iter()
        .map(|text| {
            AddressPattern::parse(text).map_err(|reason| error(format!("`{text}`: {reason}")))
        })
        .collect()
}

fn parse_accounts(file: &str, value: &Value) -> Result<BTreeMap<String, Account>, AclError> {
    let items = match value {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Sequence(items) => items,
        _ => return Err(layout(file, "`accounts` must be a list")),
    };
    let mut accounts = BTreeMap::new();
    for (index, item) in items.iter().enumerate() {
        let yaml = AccountYaml::new(file, index, item)?;
        let account = yaml.account()?;
        if accounts.contains_key(&account.access_key) {
            return Err(yaml.error("defined twice in this file"));
        }
        accounts.insert(account.access_key.clone(), account);
    }
    Ok(accounts)
}

/// One entry of `accounts` being read, with what names it in errors.
struct AccountYaml<'a> {
    file: &'a str,
    label: String,
    map: &'a Mapping,
}

impl<'a> AccountYaml<'a> {
    fn new(file: &'a str, index: usize, value: &'a Value) -> Result<Self, AclError> {
        let Value::Mapping(map) = value else {
            return Err(AclError::Account {
                file: file.into(),
                account: format!("#{}", index + 1),
                reason: "must be a mapping (accessKey, secretKey, ...)".into(),
            });
        };
        let label = match map.get("accessKey").and_then(scalar_text) {
            Some(access_key) => format!("`{access_key}`"),
            None => format!("#{}", index + 1),
        };
        for key in map.keys() {
            if !key.as_str().is_some_and(|k| ACCOUNT_KEYS.contains(&k)) {
                tracing::warn!(file, account = %label, key = %key_text(key), "unknown key in an ACL account; ignored");
            }
        }
        Ok(AccountYaml { file, label, map })
    }

    fn account(&self) -> Result<Account, AclError> {
        let access_key = self.key("accessKey")?;
        let secret_key = self.key("secretKey")?;
        let white_text = self.string("whiteRemoteAddress")?.unwrap_or_default();
        let white_remote_address = AddressPattern::parse(&white_text)
            .map_err(|reason| self.error(format!("whiteRemoteAddress `{white_text}`: {reason}")))?;
        let mut resource_perms = BTreeMap::new();
        self.resource_perms("groupPerms", RETRY_GROUP_TOPIC_PREFIX, &mut resource_perms)?;
        self.resource_perms("topicPerms", "", &mut resource_perms)?;
        Ok(Account {
            access_key,
            secret_key,
            white_remote_address,
            admin: self.admin()?,
            default_topic_perm: self.perm("defaultTopicPerm")?,
            default_group_perm: self.perm("defaultGroupPerm")?,
            resource_perms,
        })
    }

    fn error(&self, reason: impl Into<String>) -> AclError {
        AclError::Account {
            file: self.file.into(),
            account: self.label.clone(),
            reason: reason.into(),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, AclError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => scalar_text(value)
                .map(Some)
                .ok_or_else(|| self.error(format!("`{key}` must be a string"))),
        }
    }

    /// `accessKey` or `secretKey`: required, longer than 6 characters. The value is never
    /// shown (it may be a secret).
    fn key(&self, key: &str) -> Result<String, AclError> {
        let text = self
            .string(key)?
            .ok_or_else(|| self.error(format!("`{key}` is missing")))?;
        if text.chars().count() <= KEY_MIN_CHARS_EXCLUSIVE {
            return Err(self.error(format!(
                "`{key}` must be longer than {KEY_MIN_CHARS_EXCLUSIVE} characters"
            )));
        }
        Ok(text)
    }

    fn admin(&self) -> Result<bool, AclError> {
        match self.map.get("admin") {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(admin)) => Ok(*admin),
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
            Some(_) => Err(self.error("`admin` must be true or false")),
        }
    }

    fn perm(&self, key: &str) -> Result<Perm, AclError> {
        Perm::parse(self.string(key)?.as_deref())
            .map_err(|reason| self.error(format!("`{key}`: {reason}")))
    }

    /// `topicPerms` or `groupPerms`: `name=PERM` entries, each resource named once, kept
    /// under `prefix` + name.
    fn resource_perms(
        &self,
        key: &str,
        prefix: &str,
        into: &mut BTreeMap<String, Perm>,
    ) -> Result<(), AclError> {
        let entries = match self.map.get(key) {
            None => Vec::new(),
            Some(value) => string_list(value).map_err(|r| self.error(format!("`{key}` {r}")))?,
        };
        for entry in entries {
            let parts = entry
                .split_once('=')
                .map(|(name, perm)| (name.trim(), perm.trim()))
                .filter(|(name, perm)| !name.is_empty() && !perm.is_empty() && !perm.contains('='));
            let Some((name, perm)) = parts else {
                return Err(self.error(format!("`{key}` entry `{entry}` is not `name=PERM`")));
            };
            let perm = Perm::parse(Some(perm))
                .map_err(|reason| self.error(format!("`{key}` entry `{entry}`: {reason}")))?;
            let resource = format!("{prefix}{name}");
            if into.insert(resource.clone(), perm).is_some() {
                return Err(self.error(format!(
                    "`{key}` entry `{entry}`: resource `{resource}` already has a permission"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RocketMQ 4.9.8's sample file (distribution/conf/plain_acl.yml).
    const STOCK_SAMPLE: &str = "
globalWhiteRemoteAddresses:
  - 10.10.103.*
  - 192.168.0.*

accounts:
  - accessKey: RocketMQ
    secretKey: 12345678
    whiteRemoteAddress:
    admin: false
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms:
      - topicA=DENY
      - topicB=PUB|SUB
      - topicC=SUB
    groupPerms:
      # the group should convert to retry topic
      - groupA=DENY
      - groupB=PUB|SUB
      - groupC=SUB

  - accessKey: rocketmq2
    secretKey: 12345678
    whiteRemoteAddress: 192.168.1.*
    # if it is admin, it could access all resources
    admin: true
";

    /// The stock sample loads with RocketMQ's meaning: numbers as strings, groups under
    /// their retry topic, a blank whitelist that matches nothing.
    #[test]
    fn stock_sample_loads() {
        let acl = PlainAcl::parse(STOCK_SAMPLE, "plain_acl.yml").unwrap();
        assert_eq!(acl.global_white_remote_addresses.len(), 2);
        assert_eq!(
            acl.access_keys().collect::<Vec<_>>(),
            ["RocketMQ", "rocketmq2"]
        );
        let account = &acl.accounts["RocketMQ"];
        assert_eq!(account.secret_key, "12345678");
        assert_eq!(account.white_remote_address, AddressPattern::Never);
        assert!(!account.admin);
        assert_eq!(account.default_topic_perm, Perm::DENY);
        assert_eq!(account.default_group_perm, Perm::SUB);
        assert_eq!(account.resource_perms["topicB"], Perm::PUB_SUB);
        assert_eq!(account.resource_perms["%RETRY%groupC"], Perm::SUB);
        assert_eq!(account.resource_perms.len(), 6);
        let admin = &acl.accounts["rocketmq2"];
        assert!(admin.admin);
        assert_eq!(admin.default_topic_perm, Perm::DENY);
        assert!(admin.resource_perms.is_empty());
        assert!(
            !format!("{acl:?}").contains("12345678"),
            "no secret in Debug"
        );
    }

    /// Empty files and unknown keys load; `dataVersion` is ignored.
    #[test]
    fn empty_files_and_unknown_keys_load() {
        assert_eq!(PlainAcl::parse("", "a.yml").unwrap(), PlainAcl::default());
        assert_eq!(
            PlainAcl::parse("# nothing\n", "a.yml").unwrap(),
            PlainAcl::default()
        );
        let acl = PlainAcl::parse(
            "colour: blue\ndataVersion:\n  - counter: 3\n    timestamp: 1\naccounts:\n  - accessKey: abcdefg\n    secretKey: hijklmn\n    nickname: x\n",
            "a.yml",
        )
        .unwrap();
        assert_eq!(acl.access_keys().collect::<Vec<_>>(), ["abcdefg"]);
    }

    /// Each mistake is an error naming the file, the account and what is wrong; a
    /// secret key is never shown.
    #[test]
    fn bad_files_fail_with_clear_errors() {
        let account = |body: &str| format!("accounts:\n  - accessKey: reader01\n{body}");
        let cases = [
            ("accounts: [".to_string(), "f.yml: not valid YAML"),
            ("- 1\n- 2\n".into(), "f.yml: the top level must be a mapping"),
            ("accounts: 7\n".into(), "f.yml: `accounts` must be a list"),
            ("accounts:\n  - 7\n".into(), "f.yml: account #1: must be a mapping"),
            ("globalWhiteRemoteAddresses: 1.2.3.4\n".into(), "globalWhiteRemoteAddresses: must be a list"),
            ("globalWhiteRemoteAddresses: [1.2.3.999]\n".into(), "globalWhiteRemoteAddresses: `1.2.3.999`: `1.2.3.999` is not"),
            ("accounts:\n  - secretKey: s3cr3t-key\n".into(), "account #1: `accessKey` is missing"),
            ("accounts:\n  - accessKey: short\n    secretKey: s3cr3t-key\n".into(), "account `short`: `accessKey` must be longer than 6"),
            (account("    secretKey: s3cr3t\n"), "account `reader01`: `secretKey` must be longer than 6"),
            (account(""), "account `reader01`: `secretKey` is missing"),
            (account("    secretKey: [a]\n"), "`secretKey` must be a string"),
            (account("    secretKey: s3cr3t-key\n    defaultTopicPerm: READ\n"), "`defaultTopicPerm`: `READ` is not a permission"),
            (account("    secretKey: s3cr3t-key\n    topicPerms: [T]\n"), "`topicPerms` entry `T` is not `name=PERM`"),
            (account("    secretKey: s3cr3t-key\n    topicPerms: [T=SUB=PUB]\n"), "is not `name=PERM`"),
            (account("    secretKey: s3cr3t-key\n    groupPerms: [g=ALL]\n"), "`groupPerms` entry `g=ALL`: `ALL` is not a permission"),
            (account("    secretKey: s3cr3t-key\n    topicPerms: [T=SUB, T=PUB]\n"), "resource `T` already has a permission"),
            (account("    secretKey: s3cr3t-key\n    groupPerms: [g=SUB]\n    topicPerms: ['%RETRY%g=PUB']\n"), "resource `%RETRY%g` already has a permission"),
            (account("    secretKey: s3cr3t-key\n    admin: maybe\n"), "`admin` must be true or false"),
            (account("    secretKey: s3cr3t-key\n    whiteRemoteAddress: 10.0.*.1\n"), "f.yml: account `reader01`: whiteRemoteAddress `10.0.*.1`: octets after the range"),
            (account("    secretKey: s3cr3t-key\n  - accessKey: reader01\n    secretKey: s3cr3t-key\n"), "account `reader01`: defined twice in this file"),
        ];
        for (text, expected) in cases {
            let err = PlainAcl::parse(&text, "f.yml")
                .expect_err(&text)
                .to_string();
            assert!(
                err.contains(expected),
                "{text}\n=> {err}\nwanted: {expected}"
            );
            assert!(err.starts_with("f.yml: "), "{err}");
            assert!(!err.contains("s3cr3t"), "secret shown: {err}");
        }
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("acl-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn file(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Across files, the first file's account wins and every global whitelist counts; a
    /// missing file is an error naming it.
    #[test]
    fn load_merges_files_first_accesskey_wins() {
        let dir = TempDir::new("merge");
        let first = dir.file(
            "plain_acl.yml",
            "globalWhiteRemoteAddresses: [10.0.0.1]\naccounts:\n  - accessKey: shared01\n    secretKey: first-secret\n",
        );
        std::fs::create_dir_all(dir.0.join("acl")).unwrap();
        let second = dir.file(
            "acl/more.yaml",
            "globalWhiteRemoteAddresses: [10.0.0.2]\naccounts:\n  - accessKey: shared01\n    secretKey: second-secret\n  - accessKey: other001\n    secretKey: other-secret\n",
        );
        let acl = PlainAcl::load(&[first.clone(), second.clone()]).unwrap();
        assert_eq!(acl.accounts["shared01"].secret_key, "first-secret");
        assert_eq!(acl.accounts["other001"].secret_key, "other-secret");
        assert_eq!(acl.global_white_remote_addresses.len(), 2);
        let reversed = PlainAcl::load(&[second, first]).unwrap();
        assert_eq!(reversed.accounts["shared01"].secret_key, "second-secret");

        let missing = dir.0.join("absent.yml");
        let err = PlainAcl::load(std::slice::from_ref(&missing)).unwrap_err();
        assert!(matches!(err, AclError::Read { .. }));
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }

    /// The fingerprint ignores how rules are written and changes when what they grant
    /// changes.
    #[test]
    fn fingerprint_follows_the_rules_not_the_text() {
        let base = PlainAcl::parse(STOCK_SAMPLE, "a.yml")
            .unwrap()
            .fingerprint();
        assert_eq!(base.len(), 64);
        let reordered = "
dataVersion: [{counter: 9, timestamp: 5}]
accounts:
  - accessKey: rocketmq2
    secretKey: '12345678'
    whiteRemoteAddress: 192.168.1.0-255
    admin: 'true'
  - groupPerms: [groupC=SUB, groupB=SUB|PUB, groupA=DENY]
    topicPerms: [topicC=SUB, topicA=DENY, topicB=SUB|PUB]
    defaultGroupPerm: SUB
    accessKey: RocketMQ
    secretKey: 12345678
globalWhiteRemoteAddresses: [192.168.0.*, 10.10.103.0-255, '']
";
        assert_eq!(
            PlainAcl::parse(reordered, "b.yml").unwrap().fingerprint(),
            base
        );
        for (from, to) in [
            ("topicC=SUB", "topicC=PUB"),
            ("secretKey: 12345678\nglobal", "secretKey: 12345679\nglobal"),
            ("admin: 'true'", "admin: false"),
            ("192.168.0.*,", "192.168.2.*,"),
            ("defaultGroupPerm: SUB", "defaultGroupPerm: PUB"),
        ] {
            assert!(reordered.contains(from), "{from}");
            let changed = PlainAcl::parse(&reordered.replace(from, to), "c.yml").unwrap();
            assert_ne!(changed.fingerprint(), base, "{from} -> {to}");
        }
    }
}
