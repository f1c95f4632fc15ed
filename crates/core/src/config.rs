//! The configuration file (`portcullis.toml`).
//!
//! These types *are* the schema: `portcullis config schema` prints the JSON schema derived from
//! them, and `docs/config.schema.json` is a committed copy that a test keeps in step.
//! Loading, secret resolution and error reporting live in the `portcullis` binary crate.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the gateway keeps its state (ledger, generated TLS certificate).
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// The ledger store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Sockets the gateway accepts clients on.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Targets agents may reach; a PostgreSQL client selects one with `dbname`.
    #[serde(default)]
    pub connections: Vec<ConnectionConfig>,
    /// Service accounts of agents, each with an API key stored only as a hash.
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// Least-privilege policy (Cedar). Without policy files every statement is denied.
    #[serde(default)]
    pub policy: PolicyConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Cedar policy files, or folders whose `*.cedar` files are all loaded; relative to the
    /// configuration file's folder.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Reload when the configuration or a policy file changes (checked every second).
    /// SIGHUP always reloads.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Distinct statements whose classification is cached.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            files: vec![],
            watch: true,
            cache_entries: default_cache_entries(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_cache_entries() -> usize {
    10_000
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Data directory; relative paths are resolved against the configuration file's folder.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            data_dir: default_data_dir(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("portcullis-data")
}

/// Which ledger backend to use.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// Embedded SQLite file in WAL mode (the default).
    #[default]
    Sqlite,
}

/// When an event counts as recorded.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// The event is handed to the operating system (written to the WAL file) before the
    /// statement is forwarded, so a crashed or killed gateway loses nothing; the file is synced
    /// to disk in group commits every `sync_interval_ms`. A power loss can lose at most that
    /// window.
    #[default]
    Default,
    /// The event is synced to disk (fsync) before the statement is forwarded. Concurrent
    /// sessions share one sync (group commit).
    Strict,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default)]
    pub kind: StoreKind,
    /// Ledger file; default `<data_dir>/ledger.db`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub durability: Durability,
    /// Upper bound, in milliseconds, between syncs to disk in `default` durability.
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Sqlite,
            path: None,
            durability: Durability::Default,
            sync_interval_ms: default_sync_interval_ms(),
        }
    }
}

fn default_sync_interval_ms() -> u64 {
    5
}

/// Wire protocol spoken on a listener.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Postgres,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// A name for logs and events.
    pub name: String,
    pub protocol: Protocol,
    /// Address to bind, e.g. `127.0.0.1:6432`.
    pub bind: String,
    #[serde(default)]
    pub tls: ListenerTls,
    /// How agents prove their API key.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Largest protocol message accepted from a client, in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u32,
    /// Time allowed for TLS negotiation, startup and authentication, in milliseconds.
    #[serde(default = "default_startup_timeout_ms")]
    pub startup_timeout_ms: u64,
}

fn default_max_message_bytes() -> u32 {
    64 * 1024 * 1024
}

fn default_startup_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// SCRAM-SHA-256: the key never crosses the wire.
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// Cleartext password, accepted only over TLS (for clients without SCRAM).
    Password,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ListenerTlsMode {
    /// Refuse SSLRequest (answer `N`).
    Disabled,
    /// Offer TLS; plaintext clients are still accepted (with SCRAM only).
    #[default]
    Optional,
    /// Only TLS clients are accepted.
    Required,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    #[serde(default)]
    pub mode: ListenerTlsMode,
    /// PEM certificate chain. Without it a self-signed certificate is generated on first start
    /// and kept under `<data_dir>/tls/`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionType {
    Postgres,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS when the server offers it, without certificate verification.
    Prefer,
    /// TLS required, without certificate verification.
    Require,
    /// TLS required, certificate verified against `ca_file` and the host name.
    VerifyFull,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// What agents put in `dbname`.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ConnectionType,
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Database on the target.
    pub database: String,
    /// User the gateway logs in as; agents never see its password.
    pub user: String,
    /// Environment variable holding the target password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the target password (trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: UpstreamTls,
    /// PEM CA bundle for `tls = "verify-full"`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Give up reaching the target after this many milliseconds (SQLSTATE 08001).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How the target may ask the gateway to log in. Narrow it (for example to
    /// `["scram-sha-256"]`) so that a server impersonating the target over an unverified
    /// connection cannot obtain the password in cleartext or as an md5 hash.
    #[serde(default = "all_upstream_auth")]
    pub auth: Vec<UpstreamAuth>,
    /// Free-form labels (for example `env = "prod"`), recorded and later usable in policy.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

/// A login method the target may request.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamAuth {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    Md5,
    /// Cleartext password.
    Password,
    /// No password asked.
    Trust,
}

fn all_upstream_auth() -> Vec<UpstreamAuth> {
    vec![
        UpstreamAuth::ScramSha256,
        UpstreamAuth::Md5,
        UpstreamAuth::Password,
        UpstreamAuth::Trust,
    ]
}

fn default_pg_port() -> u16 {
    5432
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's name: the PostgreSQL `user` it connects as.
    pub name: String,
    /// SCRAM-SHA-256 verifier of its API key (`portcullis agent create NAME` makes one).
    pub key_hash: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Groups the agent belongs to (`Portcullis::Group::"name"` in policies).
    #[serde(default)]
    pub groups: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_the_documented_ones() {
        let l: ListenerConfig = toml::from_str(
            "name = \"pg\"\nprotocol = \"postgres\"\nbind = \"127.0.0.1:1\"\nclient_auth = \"scram-sha-256\"\n",
        )
        .expect("scram-sha-256 parses");
        assert_eq!(l.client_auth, ClientAuth::ScramSha256);
        let c: ConnectionConfig = toml::from_str(
            "name = \"c\"\ntype = \"postgres\"\nhost = \"h\"\ndatabase = \"d\"\nuser = \"u\"\nauth = [\"scram-sha-256\", \"md5\", \"password\", \"trust\"]\ntls = \"verify-full\"\n",
        )
        .expect("auth names parse");
        assert_eq!(c.auth.len(), 4);
        assert_eq!(c.tls, UpstreamTls::VerifyFull);
    }
}
