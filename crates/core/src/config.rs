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
    /// Identity providers agents and people log in with (OIDC, SAML), the gateway's own
    /// tokens and task grants.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// The HTTP API: the OAuth token endpoint (token exchange, SAML bearer) and task grants.
    #[serde(default)]
    pub api: Option<ApiConfig>,
    /// How long the ledger keeps SQL text, parameters and error messages.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Where session recordings are stored (connections choose what is recorded).
    #[serde(default)]
    pub recordings: RecordingsConfig,
    /// What is masked in responses and in the records, and who gets which profile
    /// (see docs/masking.md). On by default: every detector, redacted.
    #[serde(default)]
    pub masking: MaskingConfig,
}

/// `[masking]`: detectors, masking profiles and which sessions get which profile.
///
/// Every session gets exactly one profile: the first `[[masking.assign]]` rule that matches
/// it, else its connection's `masking_profile`, else `default_profile`. A profile that leaves
/// anything unmasked (`unmasked = true` or a `keep` strategy) is reachable only through an
/// `assign` rule, so unmasked access is always an explicit, recorded decision.
///
/// The ledger and recordings are masked whatever the session's profile: every detector,
/// redacted.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// Profile of sessions no rule assigns and whose connection names none.
    #[serde(default = "default_masking_profile")]
    pub default_profile: String,
    /// Built-in detectors switched off everywhere, by entity name (for example `["PHONE"]`).
    #[serde(default)]
    pub disabled: Vec<String>,
    /// Regions (ISO 3166 codes) phone numbers written without a `+` country code are read in.
    #[serde(default = "default_phone_regions")]
    pub phone_regions: Vec<String>,
    /// Environment variable holding the key of the `hash` strategy (HMAC-SHA-256; at least 16
    /// bytes). Keep it stable: the same value then hashes to the same token everywhere.
    #[serde(default)]
    pub hmac_key_env: Option<String>,
    /// File holding that key, instead of an environment variable.
    #[serde(default)]
    pub hmac_key_file: Option<PathBuf>,
    /// Your own detectors: a regular expression or a word list, under an entity name.
    #[serde(default)]
    pub custom: Vec<CustomDetector>,
    /// Named profiles. `standard` (redact everything detected) and `unmasked` exist unless
    /// defined here.
    #[serde(default)]
    pub profiles: std::collections::BTreeMap<String, MaskingProfile>,
    /// Which sessions get which profile; the first matching rule wins.
    #[serde(default)]
    pub assign: Vec<MaskingAssignment>,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        MaskingConfig {
            default_profile: default_masking_profile(),
            disabled: vec![],
            phone_regions: default_phone_regions(),
            hmac_key_env: None,
            hmac_key_file: None,
            custom: vec![],
            profiles: Default::default(),
            assign: vec![],
        }
    }
}

fn default_masking_profile() -> String {
    "standard".into()
}

fn default_phone_regions() -> Vec<String> {
    vec!["US".into(), "GB".into()]
}

/// `[[masking.custom]]`: one detector of your own. Give `pattern` or `words`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    /// Entity name findings are counted and redacted under (for example `EMPLOYEE_ID`).
    pub entity: String,
    /// A regular expression (Rust `regex` syntax, ASCII classes: `\d` is `[0-9]`).
    #[serde(default)]
    pub pattern: Option<String>,
    /// Whole words or phrases to find (ASCII case-insensitive).
    #[serde(default)]
    pub words: Vec<String>,
}

/// How a value is masked.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MaskStrategy {
    /// Replaced by the entity name in brackets: `[EMAIL]`.
    #[default]
    Redact,
    /// Partly shown: cards keep their first six and last four digits (PCI DSS), emails their
    /// first letter and domain, other values their last four characters.
    Partial,
    /// Only the last four characters (digits of a card) shown.
    Last4,
    /// A keyed hash (HMAC-SHA-256 under `hmac_key_env`): the same value always gives the same
    /// token, so masked columns can still be joined and counted.
    Hash,
    /// The whole field becomes NULL (in text the ledger keeps: redacted).
    Null,
    /// Not masked. Only in profiles reached through `[[masking.assign]]`.
    Keep,
}

/// `[masking.profiles.NAME]`: what one profile masks, and how.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskingProfile {
    /// Strategy for every detected entity not listed in `entities`.
    #[serde(default)]
    pub strategy: MaskStrategy,
    /// Strategy per entity name, for example `{ CREDIT_CARD = "partial", EMAIL = "hash" }`.
    #[serde(default)]
    pub entities: std::collections::BTreeMap<String, MaskStrategy>,
    /// Column rules, whatever the content looks like: `"customers.email" = "partial"`, or a
    /// bare column name for that column in every table. Matched on the result's column name
    /// and the tables the statement reads.
    #[serde(default)]
    pub columns: std::collections::BTreeMap<String, MaskStrategy>,
    /// Nothing is masked in responses (the records are still masked).
    #[serde(default)]
    pub unmasked: bool,
}

/// `[[masking.assign]]`: sessions matching every given condition get `profile`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskingAssignment {
    pub profile: String,
    /// Agent names (empty: any agent).
    #[serde(default)]
    pub agents: Vec<String>,
    /// Groups, any of which the agent must be in (empty: any).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Connection names (empty: any).
    #[serde(default)]
    pub connections: Vec<String>,
    /// Only for sessions carrying a business justification (a task grant's reason), which
    /// the session's opening event records with the profile.
    #[serde(default)]
    pub require_justification: bool,
}

/// What a connection's sessions record besides the ledger's statement events.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordingMode {
    /// No recording (the ledger still records every statement and its outcome).
    #[default]
    Off,
    /// What the target received, as it received it, with timing: the session as typed.
    Commands,
    /// Both directions: also every response as the client received it (rows included).
    Full,
}

/// Which object store holds the recordings.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecordingStoreKind {
    /// A folder (`path`, default `<data_dir>/recordings`).
    #[default]
    Local,
    /// An S3-compatible bucket (`bucket`, `endpoint`, `region`, credentials from env).
    S3,
}

/// `[recordings]`: session recordings are chunked, compressed and stored under the SHA-256 of
/// each chunk; the ledger records every chunk's hash (see docs/recordings.md).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordingsConfig {
    #[serde(default)]
    pub store: RecordingStoreKind,
    /// `store = "local"`: the folder, relative to data_dir; default `recordings`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `store = "s3"`: the bucket (it must exist).
    #[serde(default)]
    pub bucket: Option<String>,
    /// `store = "s3"`: a key prefix inside the bucket.
    #[serde(default)]
    pub prefix: Option<String>,
    /// `store = "s3"`: the endpoint of an S3-compatible service (MinIO, Ceph, …); default AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `store = "s3"`: the region; default `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// `store = "s3"`: environment variables holding the credentials (default
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// `store = "s3"`: allow a plain `http://` endpoint (a local test server).
    #[serde(default)]
    pub allow_http: bool,
    /// A chunk is stored once this many KiB of a session were recorded (and at its end).
    #[serde(default = "default_chunk_kib")]
    pub chunk_kib: u32,
}

fn default_chunk_kib() -> u32 {
    256
}

impl Default for RecordingsConfig {
    fn default() -> Self {
        RecordingsConfig {
            store: RecordingStoreKind::Local,
            path: None,
            bucket: None,
            prefix: None,
            endpoint: None,
            region: None,
            access_key_id_env: None,
            secret_access_key_env: None,
            allow_http: false,
            chunk_kib: default_chunk_kib(),
        }
    }
}

/// `[retention]`: rules that delete the sealed fields (SQL text, parameters, error messages)
/// of old events by destroying their segment's key. Events themselves, their hashes and the
/// chain stay. Without rules nothing is ever deleted.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// How often the gateway applies the rules, in minutes (also once at start).
    #[serde(default = "default_retention_interval")]
    pub interval_mins: u64,
    #[serde(default)]
    pub rules: Vec<RetentionRule>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval_mins: default_retention_interval(),
            rules: Vec::new(),
        }
    }
}

fn default_retention_interval() -> u64 {
    60
}

/// One retention rule. A segment (one connection, one UTC day) is deleted once it is older
/// than the `max_age_days` of a rule that matches its connection, and older than the
/// `min_age_days` of every rule that matches it, and no matching rule has `legal_hold`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Named in every deletion event.
    pub name: String,
    /// Connection names the rule covers; `"*"` covers all (also events of no connection).
    #[serde(default = "all_connections")]
    pub connections: Vec<String>,
    /// Delete once the segment's day ended this many days ago. Absent: never delete.
    #[serde(default)]
    pub max_age_days: Option<u64>,
    /// Never delete before this many days after the segment's day ended.
    #[serde(default)]
    pub min_age_days: u64,
    /// Keep everything the rule covers, whatever the other rules say (litigation, audit).
    #[serde(default)]
    pub legal_hold: bool,
}

fn all_connections() -> Vec<String> {
    vec!["*".to_string()]
}

/// Where identities come from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// OpenID Connect issuers whose JWT access tokens the gateway accepts.
    #[serde(default)]
    pub oidc: Vec<OidcIssuerConfig>,
    /// SAML 2.0 identity providers whose signed assertions the token endpoint exchanges
    /// (RFC 7522) for gateway tokens.
    #[serde(default)]
    pub saml: Vec<SamlIdpConfig>,
    /// The gateway's own tokens (token exchange, SAML bearer, task grants).
    #[serde(default)]
    pub tokens: GatewayTokenConfig,
    /// Who may issue task grants.
    #[serde(default)]
    pub grants: GrantsConfig,
}

/// An OpenID Connect issuer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuerConfig {
    /// A name for logs and events.
    pub name: String,
    /// The issuer identifier, exactly as in the tokens' `iss` claim.
    pub issuer: String,
    /// OpenID discovery document; default `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// JWKS URL; when set, discovery is skipped.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Vec<String>,
    /// Claim that names the agent (service account) a token belongs to; when absent from a
    /// token, `sub` is used.
    #[serde(default = "default_agent_claim")]
    pub agent_claim: String,
    /// Claim that holds the groups/roles (a string or a list of strings).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Accepted signature algorithms (`RS256`, `ES256`, `EdDSA`; HMAC and `none` never are).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// Shortest time between two JWKS fetches triggered by an unknown `kid`, in seconds.
    #[serde(default = "default_jwks_min_refresh_secs")]
    pub jwks_min_refresh_secs: u64,
    /// Fetch the discovery document and the JWKS over plain `http://` from a host that is not
    /// loopback. Off by default: whoever is on the network path could swap the signing keys
    /// and mint tokens the gateway would accept. Loopback (`127.0.0.0/8`, `::1`, `localhost`)
    /// is always allowed.
    #[serde(default)]
    pub allow_http: bool,
    /// PEM file of the certificate authorities trusted for this issuer's HTTPS endpoints
    /// (discovery and JWKS), in addition to the system's roots: for a provider behind a
    /// private CA. Relative to the configuration file's folder.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_agent_claim() -> String {
    "client_id".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}
fn default_leeway_secs() -> u64 {
    30
}
fn default_jwks_min_refresh_secs() -> u64 {
    10
}

/// A SAML 2.0 identity provider for service principals (RFC 7522 bearer assertions).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SamlIdpConfig {
    pub name: String,
    /// The IdP's entity id: the assertions' `Issuer`.
    pub entity_id: String,
    /// The IdP's signing certificate (PEM); relative to the configuration file's folder.
    pub certificate_file: PathBuf,
    /// This gateway's entity id, required in the assertion's `AudienceRestriction`.
    pub audience: String,
    /// The token endpoint URL the assertion must name as `Recipient`; default
    /// `<api.public_url>/oauth/token`.
    #[serde(default)]
    pub recipient: Option<String>,
    /// Attribute holding the groups.
    #[serde(default = "default_groups_claim")]
    pub groups_attribute: String,
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
}

/// The gateway's own tokens: JWTs signed with an Ed25519 key of the gateway.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayTokenConfig {
    /// `iss` of the tokens the gateway issues.
    #[serde(default = "default_token_issuer")]
    pub issuer: String,
    /// Lifetime of exchanged tokens, in seconds (never beyond the presented tokens' own).
    #[serde(default = "default_token_ttl_secs")]
    pub ttl_secs: u64,
    /// Signing key (PKCS#8 PEM); generated on first start under
    /// `<data_dir>/keys/token-signing.pem` when not set.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
}

impl Default for GatewayTokenConfig {
    fn default() -> Self {
        GatewayTokenConfig {
            issuer: default_token_issuer(),
            ttl_secs: default_token_ttl_secs(),
            signing_key_file: None,
        }
    }
}

fn default_token_issuer() -> String {
    "urn:portcullis:gateway".into()
}
fn default_token_ttl_secs() -> u64 {
    900
}

/// Task grants: a person lets an agent act on a connection, for a reason, for a while.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// Groups (from the person's token) allowed to issue grants; empty = any person with a
    /// valid token from a configured OIDC issuer.
    #[serde(default)]
    pub requester_groups: Vec<String>,
    /// Longest grant, in seconds.
    #[serde(default = "default_max_grant_ttl_secs")]
    pub max_ttl_secs: u64,
}

impl Default for GrantsConfig {
    fn default() -> Self {
        GrantsConfig {
            requester_groups: vec![],
            max_ttl_secs: default_max_grant_ttl_secs(),
        }
    }
}

fn default_max_grant_ttl_secs() -> u64 {
    24 * 3600
}

/// The HTTP API listener.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to bind, e.g. `127.0.0.1:6480`.
    pub bind: String,
    /// Serve HTTPS with the listeners' certificate (the generated one unless `cert_file` is
    /// set on the first listener). Turn off only behind a TLS-terminating proxy.
    #[serde(default = "default_true")]
    pub tls: bool,
    /// The URL clients reach the API at (for SAML `Recipient` and the CLI); default
    /// `https://<bind>`.
    #[serde(default)]
    pub public_url: Option<String>,
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
    /// A PostgreSQL database shared by several gateways (`url` or `url_env`).
    Postgres,
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
    /// Ledger file; default `<data_dir>/ledger.db` (`kind = "sqlite"`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `kind = "postgres"`: the store's URL, `postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
    /// The tables are created in the schema `portcullis` at first start. A URL with a password
    /// belongs in `url_env` instead.
    #[serde(default)]
    pub url: Option<String>,
    /// `kind = "postgres"`: the name of an environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default)]
    pub durability: Durability,
    /// Upper bound, in milliseconds, between syncs to disk in `default` durability.
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
    /// Signed Merkle checkpoints of the ledger (on by default).
    #[serde(default)]
    pub checkpoints: CheckpointConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Sqlite,
            path: None,
            url: None,
            url_env: None,
            durability: Durability::Default,
            sync_interval_ms: default_sync_interval_ms(),
            checkpoints: CheckpointConfig::default(),
        }
    }
}

/// `[store.checkpoints]`: the gateway signs the ledger's Merkle root (Ed25519, C2SP signed
/// note) every `every_secs` seconds or `every_events` events, and at shutdown.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Sign checkpoints at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The signing key (created, mode 0600, on first start, with `<key_file>.pub` holding the
    /// verifier key to give auditors). Default `<data_dir>/keys/ledger-checkpoint.key`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The log's name in every checkpoint; default: the name of the existing key, or
    /// `portcullis/<hostname>` for a new one.
    #[serde(default)]
    pub origin: Option<String>,
    /// A checkpoint once this many events arrived since the last one.
    #[serde(default = "default_checkpoint_events")]
    pub every_events: u64,
    /// A checkpoint at least this often, in seconds, while events arrive.
    #[serde(default = "default_checkpoint_secs")]
    pub every_secs: u64,
    /// A folder on other storage (another disk, a WORM mount) that receives every
    /// checkpoint as `<mirror_dir>/checkpoint`. `audit verify` compares the ledger with it, so
    /// deleting the newest events or rewriting the ledger shows even if the ledger's own
    /// checkpoints are deleted too. One folder per ledger.
    #[serde(default)]
    pub mirror_dir: Option<PathBuf>,
    /// An S3-compatible bucket that receives every checkpoint as `<prefix>/checkpoint`
    /// (replaced) and `<prefix>/checkpoints/<tree size>` (written once: give the bucket
    /// object lock). Checked at start and by `audit verify`, like `mirror_dir`.
    #[serde(default)]
    pub mirror_s3: Option<S3Config>,
}

/// An S3-compatible bucket (AWS, MinIO, Ceph, …).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket (it must exist).
    pub bucket: String,
    /// A key prefix inside the bucket (one per ledger).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The endpoint of an S3-compatible service; default AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Default `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Environment variables holding the credentials (default `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// Allow a plain `http://` endpoint (a local test server).
    #[serde(default)]
    pub allow_http: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            enabled: true,
            key_file: None,
            origin: None,
            every_events: default_checkpoint_events(),
            every_secs: default_checkpoint_secs(),
            mirror_dir: None,
            mirror_s3: None,
        }
    }
}

fn default_checkpoint_events() -> u64 {
    10_000
}

fn default_checkpoint_secs() -> u64 {
    10
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
    /// What sessions on this connection record (`off`, `commands`, `full`; see
    /// `[recordings]`).
    #[serde(default)]
    pub recording: RecordingMode,
    /// Masking profile of this connection's sessions when no `[[masking.assign]]` rule picks
    /// one (default: `[masking] default_profile`).
    #[serde(default)]
    pub masking_profile: Option<String>,
    /// Sessions of agents that no policy lets write on this connection run read-only on the
    /// target (`default_transaction_read_only = on`, sent in the startup packet's `options`),
    /// so that a write the classifier missed still fails in the database. Turn off only for
    /// a target that refuses startup options (pgbouncer without
    /// `ignore_startup_parameters = options`).
    #[serde(default = "default_true")]
    pub read_only_sessions: bool,
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
    /// Leave it out for an agent that logs in only with tokens (OIDC, gateway tokens, grants).
    #[serde(default)]
    pub key_hash: Option<String>,
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
