//! Loading the configuration file: parse, validate, resolve secrets and paths.
//! Every error names the file and, where the parser knows it, the line.

use anyhow::{anyhow, bail, Context};
use portcullis_core::config::{Config, ListenerTlsMode, StoreKind, UpstreamTls};
use portcullis_core::{EventData, SnapshotFile};
use portcullis_ledger::LedgerReader;
use portcullis_policy::{Actor, GateState, PolicySet, Target};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// A validated configuration with resolved paths and secrets.
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    pub data_dir: PathBuf,
    pub ledger_path: PathBuf,
    /// Target passwords by connection name.
    pub passwords: std::collections::HashMap<String, Option<String>>,
    /// The configuration file's text, as loaded (recorded in policy snapshots).
    pub text: String,
    /// The policies, validated.
    pub policies: Arc<PolicySet>,
    /// `[masking]`, compiled.
    pub masker: Arc<portcullis_mask::Masker>,
    /// Accepted, but worth telling the operator (`check` prints them, `serve` logs them).
    pub warnings: Vec<String>,
}

impl Loaded {
    /// What the policy gate decides with: policies, agents' groups, connections' tags.
    pub fn gate_state(&self) -> GateState {
        gate_state(&self.config, self.policies.clone())
    }

    /// The policy snapshot event for this version.
    pub fn snapshot_event(&self, trigger: &str) -> EventData {
        EventData::PolicySnapshot {
            hash: self.policies.hash().to_string(),
            trigger: trigger.to_string(),
            config: SnapshotFile {
                path: self.path.display().to_string(),
                sha256: sha256_hex(self.text.as_bytes()),
                text: self.text.clone(),
            },
            policies: self
                .policies
                .files()
                .iter()
                .map(|f| SnapshotFile {
                    path: f.path.clone(),
                    sha256: f.sha256.clone(),
                    text: f.text.clone(),
                })
                .collect(),
        }
    }
}

/// What the policy gate decides with: policies, agents' groups, connections' tags.
pub fn gate_state(config: &Config, policies: Arc<PolicySet>) -> GateState {
    GateState {
        policies,
        actors: config
            .agents
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    Actor {
                        name: a.name.clone(),
                        groups: a.groups.clone(),
                        ..Default::default()
                    },
                )
            })
            .collect(),
        targets: config
            .connections
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    Target {
                        name: c.name.clone(),
                        kind: "postgres".into(),
                        tags: c.tags.clone(),
                    },
                )
            })
            .collect(),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The policy files a configuration names: files as given, folders expanded to their
/// `*.cedar` files (sorted).
pub fn policy_files(config: &Config, base: &Path, where_: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in &config.policy.files {
        let p = resolve(base, entry);
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&p)
                .with_context(|| format!("{where_}: policy.files: cannot list {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "cedar"))
                .collect();
            found.sort();
            if found.is_empty() {
                bail!(
                    "{where_}: policy.files: folder {} holds no *.cedar file",
                    p.display()
                );
            }
            out.extend(found);
        } else if p.exists() {
            out.push(p);
        } else {
            bail!(
                "{where_}: policy.files: {} does not exist (paths are relative to the configuration file's folder)",
                p.display()
            );
        }
    }
    Ok(out)
}

pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Config);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

/// Parses the file only (no secret resolution): enough for `audit` commands.
pub fn parse(path: &Path) -> anyhow::Result<(Config, PathBuf, PathBuf)> {
    parse_text(path).map(|(c, d, l, _)| (c, d, l))
}

fn parse_text(path: &Path) -> anyhow::Result<(Config, PathBuf, PathBuf, String)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    let config: Config = toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(":{line}")
            })
            .unwrap_or_default();
        anyhow!("{}{at}: {}", path.display(), e.message())
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let data_dir = resolve(&base, &config.gateway.data_dir);
    let ledger_path = match &config.store.path {
        Some(p) => resolve(&data_dir, p),
        None => data_dir.join("ledger.db"),
    };
    Ok((config, data_dir, ledger_path, text))
}

/// The PostgreSQL store's URL (`store.kind = "postgres"`), from `url` or `url_env`; `None`
/// for the SQLite file.
pub fn store_url(config: &Config) -> anyhow::Result<Option<String>> {
    let st = &config.store;
    match (st.kind, &st.url, &st.url_env) {
        (StoreKind::Sqlite, None, None) => Ok(None),
        (StoreKind::Sqlite, ..) => bail!(
            "store.url and store.url_env are for store.kind = \"postgres\"; set the kind, or \
             remove them to keep the SQLite file"
        ),
        (StoreKind::Postgres, Some(url), None) => Ok(Some(url.clone())),
        (StoreKind::Postgres, None, Some(var)) => match std::env::var(var) {
            Ok(url) if !url.trim().is_empty() => Ok(Some(url.trim().to_string())),
            _ => bail!(
                "store.url_env names {var:?}, which is not set: export {var}=postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            ),
        },
        (StoreKind::Postgres, Some(_), Some(_)) => {
            bail!("store: give url or url_env, not both")
        }
        (StoreKind::Postgres, None, None) => bail!(
            "store.kind = \"postgres\" needs store.url (or store.url_env naming a variable that \
             holds it): postgres://USER:PASSWORD@HOST:PORT/DATABASE"
        ),
    }
}

/// A reader of the configured ledger: the SQLite file at `ledger_path`, or the PostgreSQL
/// store.
pub fn open_reader(config: &Config, ledger_path: &Path) -> anyhow::Result<LedgerReader> {
    match store_url(config)? {
        Some(url) => LedgerReader::open_postgres(&url),
        None => LedgerReader::open(ledger_path),
    }
    .map_err(|e| anyhow!("{e}"))
}

/// A client of an S3-compatible bucket, credentials from the environment.
pub fn s3_store(
    c: &portcullis_core::config::S3Config,
) -> anyhow::Result<portcullis_ledger::blob::BlobStore> {
    let env = |name: &Option<String>, default: &str| -> anyhow::Result<String> {
        let var = name.as_deref().unwrap_or(default);
        std::env::var(var)
            .map_err(|_| anyhow!("the S3 credentials are read from ${var}, which is not set"))
    };
    portcullis_ledger::blob::BlobStore::s3(&portcullis_ledger::blob::S3Options {
        bucket: c.bucket.clone(),
        prefix: c.prefix.clone().unwrap_or_default(),
        endpoint: c.endpoint.clone(),
        region: c.region.clone().unwrap_or_else(|| "us-east-1".into()),
        access_key_id: env(&c.access_key_id_env, "AWS_ACCESS_KEY_ID")?,
        secret_access_key: env(&c.secret_access_key_env, "AWS_SECRET_ACCESS_KEY")?,
        allow_http: c.allow_http,
    })
    .map_err(|e| anyhow!("{e}"))
}

/// The checkpoint mirror bucket (`[store.checkpoints.mirror_s3]`), if configured.
pub fn mirror_bucket(
    config: &Config,
) -> anyhow::Result<Option<portcullis_ledger::blob::BlobStore>> {
    config
        .store
        .checkpoints
        .mirror_s3
        .as_ref()
        .map(|c| s3_store(c).map_err(|e| anyhow!("[store.checkpoints.mirror_s3]: {e}")))
        .transpose()
}

/// The checkpoint signing key and the mirror folder, resolved against the data directory.
pub fn checkpoint_paths(config: &Config, data_dir: &Path) -> (PathBuf, Option<PathBuf>) {
    let cp = &config.store.checkpoints;
    let key = match &cp.key_file {
        Some(k) => resolve(data_dir, k),
        None => data_dir.join("keys").join("ledger-checkpoint.key"),
    };
    (key, cp.mirror_dir.as_ref().map(|m| resolve(data_dir, m)))
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p == Path::new(".") {
        base.to_path_buf()
    } else if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Parses the configuration and loads its policies (no secrets, no listeners checked):
/// enough to explain a decision.
pub fn load_policies(path: &Path) -> anyhow::Result<(Config, Arc<PolicySet>)> {
    let (config, ..) = parse(path)?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let files = policy_files(&config, &base, &path.display().to_string())?;
    let policies = PolicySet::load_files(&files).map_err(|e| anyhow!("{e}"))?;
    Ok((config, Arc::new(policies)))
}

/// Parses and validates everything `serve` needs.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let (mut config, data_dir, ledger_path, text) = parse_text(path)?;
    let where_ = path.display().to_string();
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();

    // Every file named in the configuration is relative to the configuration's folder.
    for l in &mut config.listeners {
        for f in [&mut l.tls.cert_file, &mut l.tls.key_file]
            .into_iter()
            .flatten()
        {
            *f = resolve(&base, f);
        }
    }
    for c in &mut config.connections {
        for f in [&mut c.ca_file, &mut c.password_file].into_iter().flatten() {
            *f = resolve(&base, f);
        }
    }
    for idp in &mut config.identity.saml {
        idp.certificate_file = resolve(&base, &idp.certificate_file);
    }
    for i in &mut config.identity.oidc {
        if let Some(f) = &mut i.ca_file {
            *f = resolve(&base, f);
        }
    }
    if let Some(f) = &mut config.identity.tokens.signing_key_file {
        *f = resolve(&base, f);
    }
    store_url(&config).with_context(|| format!("{where_}: [store]"))?;
    let mut rule_names = HashSet::new();
    for r in &config.retention.rules {
        if !rule_names.insert(&r.name) {
            bail!(
                "{where_}: retention rule name {:?} is used twice (deletion events name the rule)",
                r.name
            );
        }
        if let Some(max) = r.max_age_days.filter(|m| *m < r.min_age_days) {
            bail!("{where_}: retention rule {:?}: max_age_days = {max} is below min_age_days = {}; the minimum always wins, so this rule would never delete: raise max_age_days or lower min_age_days", r.name, r.min_age_days);
        }
        for c in &r.connections {
            if c != "*" && !config.connections.iter().any(|k| &k.name == c) {
                bail!("{where_}: retention rule {:?}: no [[connections]] entry is named {c:?} (use \"*\" for all)", r.name);
            }
        }
    }
    let mut names = HashSet::new();
    let mut warnings = Vec::new();
    for i in &config.identity.oidc {
        // Where the keys come from, and over what: https, loopback, or allow_http (warned).
        let fetched = i
            .jwks_uri
            .as_deref()
            .or(i.discovery_url.as_deref())
            .unwrap_or(&i.issuer);
        let at = line_of(&text, fetched);
        warnings.extend(
            portcullis_identity::idp_http::check_transport(i)
                .map_err(|e| anyhow!("{where_}{at}: {e}"))?
                .into_iter()
                .map(|w| format!("{where_}{at}: {w}")),
        );
        portcullis_identity::idp_http::http_client(i).map_err(|e| anyhow!("{where_}: {e}"))?;
        if !names.insert(&i.name) {
            bail!("{where_}: identity.oidc name {:?} is used twice", i.name);
        }
        if i.issuer == config.identity.tokens.issuer {
            bail!("{where_}: identity.oidc {:?}: issuer {:?} is the gateway's own token issuer (identity.tokens.issuer); give one of them another name", i.name, i.issuer);
        }
        if i.audiences.is_empty() {
            bail!("{where_}: identity.oidc {:?}: audiences = [] would accept no token; list the audience your provider puts in tokens for the gateway", i.name);
        }
    }
    if let Some(api) = &config.api {
        api.bind.parse::<SocketAddr>().map_err(|e| {
            anyhow!(
                "{where_}: api.bind = {:?} is not an address:port ({e})",
                api.bind
            )
        })?;
    }

    if config.listeners.is_empty() {
        bail!("{where_}: no [[listeners]]: add one, e.g.\n[[listeners]]\nname = \"postgres\"\nprotocol = \"postgres\"\nbind = \"127.0.0.1:6432\"");
    }
    let mut names = HashSet::new();
    for l in &config.listeners {
        if !names.insert(&l.name) {
            bail!("{where_}: listener name {:?} is used twice", l.name);
        }
        l.bind.parse::<SocketAddr>().map_err(|e| {
            anyhow!(
                "{where_}: listener {:?}: bind = {:?} is not an address:port ({e})",
                l.name,
                l.bind
            )
        })?;
        if l.tls.cert_file.is_some() != l.tls.key_file.is_some() {
            bail!("{where_}: listener {:?}: set both tls.cert_file and tls.key_file, or neither (a self-signed certificate is then generated)", l.name);
        }
        if l.tls.mode == ListenerTlsMode::Disabled
            && l.client_auth == portcullis_core::config::ClientAuth::Password
        {
            bail!("{where_}: listener {:?}: client_auth = \"password\" sends the key in cleartext and needs TLS; enable tls or use \"scram-sha-256\"", l.name);
        }
    }
    if config.connections.is_empty() {
        bail!("{where_}: no [[connections]]: agents would have nothing to reach");
    }
    let mut names = HashSet::new();
    let mut passwords = std::collections::HashMap::new();
    for c in &config.connections {
        if !names.insert(&c.name) {
            bail!("{where_}: connection name {:?} is used twice", c.name);
        }
        if c.password_env.is_some() && c.password_file.is_some() {
            bail!(
                "{where_}: connection {:?}: set password_env or password_file, not both",
                c.name
            );
        }
        if c.tls == UpstreamTls::VerifyFull && c.ca_file.is_none() {
            bail!(
                "{where_}: connection {:?}: tls = \"verify-full\" needs ca_file",
                c.name
            );
        }
        let password = if let Some(var) = &c.password_env {
            Some(std::env::var(var).map_err(|_| {
                anyhow!("{where_}: connection {:?}: password_env = {var:?} but that environment variable is not set", c.name)
            })?)
        } else if let Some(file) = &c.password_file {
            let text = std::fs::read_to_string(file).with_context(|| {
                format!(
                    "{where_}: connection {:?}: cannot read password_file {}",
                    c.name,
                    file.display()
                )
            })?;
            Some(text.trim_end_matches(['\n', '\r']).to_string())
        } else {
            None
        };
        passwords.insert(c.name.clone(), password);
    }
    portcullis_identity::AgentRegistry::new(
        config
            .agents
            .iter()
            .filter_map(|a| Some((a.name.as_str(), a.key_hash.as_deref()?))),
    )
    .map_err(|e| anyhow!("{where_}: {e}"))?;
    let files = policy_files(&config, &base, &where_)?;
    let policies = PolicySet::load_files(&files).map_err(|e| anyhow!("{e}"))?;
    let masker = Arc::new(masker(&config, &base, &where_)?);
    Ok(Loaded {
        config,
        path: path.to_path_buf(),
        data_dir,
        ledger_path,
        passwords,
        text,
        policies: Arc::new(policies),
        masker,
        warnings,
    })
}

/// `:LINE` of the first line of `text` that holds `needle` as a quoted string (to point an
/// error at the setting), or nothing.
fn line_of(text: &str, needle: &str) -> String {
    let quoted = format!("{needle:?}");
    text.lines()
        .position(|l| l.contains(&quoted))
        .map(|i| format!(":{}", i + 1))
        .unwrap_or_default()
}

/// Compiles `[masking]`: detectors, profiles, the hash key; checks every name it uses.
pub fn masker(
    config: &Config,
    base: &Path,
    where_: &str,
) -> anyhow::Result<portcullis_mask::Masker> {
    let m = &config.masking;
    let key = match (&m.hmac_key_env, &m.hmac_key_file) {
        (Some(_), Some(_)) => bail!("{where_}: [masking] set hmac_key_env or hmac_key_file, not both"),
        (Some(var), None) => Some(
            std::env::var(var)
                .map_err(|_| anyhow!("{where_}: [masking] hmac_key_env = {var:?} but that environment variable is not set"))?
                .into_bytes(),
        ),
        (None, Some(file)) => {
            let file = base.join(file);
            let text = std::fs::read_to_string(&file).with_context(|| {
                format!("{where_}: [masking] cannot read hmac_key_file {}", file.display())
            })?;
            Some(text.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
        }
        (None, None) => None,
    };
    let masker = portcullis_mask::Masker::new(m, key).map_err(|e| anyhow!("{where_}: {e}"))?;
    for c in &config.connections {
        if let Some(p) = &c.masking_profile {
            masker
                .check_connection_profile(&c.name, p)
                .map_err(|e| anyhow!("{where_}: {e}"))?;
        }
    }
    for (i, a) in m.assign.iter().enumerate() {
        for c in &a.connections {
            if !config.connections.iter().any(|k| &k.name == c) {
                bail!("{where_}: [[masking.assign]] #{i}: no [[connections]] entry is named {c:?}");
            }
        }
    }
    Ok(masker)
}

pub fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let l = load(path)?;
    println!(
        "{}: OK — {} listener(s), {} connection(s), {} agent(s), {} policy(ies) in {} file(s); ledger at {}",
        l.path.display(),
        l.config.listeners.len(),
        l.config.connections.len(),
        l.config.agents.len(),
        l.policies.len(),
        l.policies.files().len(),
        l.ledger_path.display()
    );
    for f in l.policies.files() {
        println!("  policy file {} (sha256 {})", f.path, &f.sha256[..16]);
    }
    for w in &l.warnings {
        eprintln!("warning: {w}");
    }
    if l.policies.is_empty() {
        eprintln!("warning: no policies: every statement will be denied. Add [policy] files = [\"policies\"] (see examples/policies)");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("portcullis.toml");
        std::fs::write(&p, text).expect("write config");
        p
    }

    #[test]
    fn committed_schema_matches_the_types() {
        let committed = include_str!("../../../docs/config.schema.json");
        assert_eq!(
            committed.trim(),
            schema_json().trim(),
            "docs/config.schema.json is stale: run `portcullis config schema > docs/config.schema.json`"
        );
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../../docs/configuration.md");
        let start = doc.find("```toml\n").expect("a toml block") + 8;
        let end = start + doc[start..].find("```").expect("block end");
        let config: Config =
            toml::from_str(&doc[start..end]).expect("docs/configuration.md example parses");
        assert_eq!(
            config.connections[0].auth,
            [portcullis_core::config::UpstreamAuth::ScramSha256]
        );
        assert_eq!(
            config.listeners[0].client_auth,
            portcullis_core::config::ClientAuth::ScramSha256
        );
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "[gateway]\ndata_dir = \"x\"\n\n[[listeners]\nname = 1\n",
        );
        let Err(err) = load(&p).map(|_| ()) else {
            panic!("must fail")
        };
        let err = err.to_string();
        assert!(err.contains("portcullis.toml:4"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(dir.path(), "[store]\ndurabilty = \"strict\"\n");
        let Err(err) = load(&p).map(|_| ()) else {
            panic!("must fail")
        };
        let err = err.to_string();
        assert!(err.contains("durabilty"), "{err}");
        assert!(err.contains(":2"), "{err}");
    }

    #[test]
    fn retention_rules_that_cannot_work_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = "[[connections]]\nname = \"db\"\ntype = \"postgres\"\nhost = \"h\"\ndatabase = \"d\"\nuser = \"u\"\n";
        for (rule, needle) in [
            (
                "name = \"r\"\nmax_age_days = 5\nmin_age_days = 30\n",
                "below min_age_days",
            ),
            (
                "name = \"r\"\nconnections = [\"nope\"]\nmax_age_days = 5\n",
                "named \"nope\"",
            ),
        ] {
            let p = write(dir.path(), &format!("{conn}[[retention.rules]]\n{rule}"));
            let Err(err) = load(&p).map(|_| ()) else {
                panic!("must fail: {rule}")
            };
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn missing_password_env_is_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            r#"
[[listeners]]
name = "pg"
protocol = "postgres"
bind = "127.0.0.1:0"
[[connections]]
name = "db"
type = "postgres"
host = "127.0.0.1"
database = "x"
user = "x"
password_env = "PORTCULLIS_TEST_SURELY_UNSET"
"#,
        );
        let Err(err) = load(&p).map(|_| ()) else {
            panic!("must fail")
        };
        let err = err.to_string();
        assert!(err.contains("PORTCULLIS_TEST_SURELY_UNSET"), "{err}");
        assert!(err.contains("\"db\""), "{err}");
    }

    #[test]
    fn bad_agent_hash_names_the_agent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            r#"
[[listeners]]
name = "pg"
protocol = "postgres"
bind = "127.0.0.1:0"
[[connections]]
name = "db"
type = "postgres"
host = "127.0.0.1"
database = "x"
user = "x"
[[agents]]
name = "bot"
key_hash = "plaintext-key"
"#,
        );
        let Err(err) = load(&p).map(|_| ()) else {
            panic!("must fail")
        };
        let err = err.to_string();
        assert!(err.contains("bot"), "{err}");
    }
}
