//! Where masking lives: detectors for personal data and secrets, their validators, masking
//! strategies and masking profiles.
//!
//! - `detect`: the detectors and the one-pass scanner over all of them.
//! - `validate`: what makes a match a finding (checksums, issuer ranges, number plans).
//! - `strategy`: how a finding or a column value is masked (redact, partial, last four, keyed
//!   hash, NULL).
//! - [`Masker`]: the compiled configuration; [`Masker::mask_field`] masks one value of a
//!   result row for its column type, [`Masker::mask_text`] masks free text for a profile,
//!   [`Masker::mask_record`] masks what the ledger keeps (every detector, redacted).
//!
//! The masker knows nothing of wire formats: the protocol crates decide which bytes are a
//! value and what type it has, and obey what comes back.

mod detect;
mod error;
mod json;
mod phone;
mod strategy;
pub mod validate;

pub use detect::{EntityId, Finding, BUILTIN_ENTITIES};
pub use error::MaskError;
pub use json::JsonKeyRules;

use detect::Scanner;
use portcullis_core::config::{MaskStrategy, MaskingConfig, MaskingProfile};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Of several strategies that could apply to one value, the one that shows least of it
/// (`null`, then `redact`, `hash`, `last4`, `partial`, `keep`).
pub fn strictest(strategies: impl IntoIterator<Item = MaskStrategy>) -> Option<MaskStrategy> {
    let shown = |s: &MaskStrategy| match s {
        MaskStrategy::Null => 0,
        MaskStrategy::Redact => 1,
        MaskStrategy::Hash => 2,
        MaskStrategy::Last4 => 3,
        MaskStrategy::Partial => 4,
        MaskStrategy::Keep => 5,
    };
    strategies.into_iter().min_by_key(shown)
}

/// The pseudo-entity column rules are counted under.
pub const COLUMN_ENTITY: &str = "COLUMN";

/// What a value of a result column is, for masking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Text of any shape (text, varchar, char, name, xml, arrays of them, unknown types in
    /// text format): masked values stay text.
    Text,
    /// JSON text: a masked value that is no longer valid JSON becomes NULL.
    Json,
    /// jsonb in binary format: a version byte, then JSON text.
    JsonbBinary,
    /// A value that must keep its type's syntax (numbers, addresses in text format): if
    /// anything in it must be masked, the whole value becomes NULL.
    Typed,
    /// Not scanned (booleans, dates, timestamps, UUIDs, binary formats of other types).
    /// Column rules still apply: the value becomes NULL.
    Opaque,
}

/// What to send instead of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// Send the value as it is.
    Unchanged,
    /// Send these bytes instead.
    Value(Vec<u8>),
    /// Send NULL.
    Null,
}

/// How many values were masked, per entity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts(Vec<u64>);

impl Counts {
    fn add(&mut self, entity: EntityId) {
        if self.0.len() <= entity {
            self.0.resize(entity + 1, 0);
        }
        self.0[entity] += 1;
    }

    /// Adds another set of counts to this one.
    pub fn merge(&mut self, other: &Counts) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&n| n == 0)
    }

    /// Counts by entity name (only entities with a count).
    pub fn by_name(&self, masker: &Masker) -> BTreeMap<String, u64> {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| (masker.entities[i].clone(), n))
            .collect()
    }
}

/// A column rule of a profile.
#[derive(Debug, Clone)]
struct ColumnRule {
    table: Option<String>,
    column: String,
    strategy: MaskStrategy,
}

/// One masking profile, compiled.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    /// Strategy per entity id.
    strategies: Vec<MaskStrategy>,
    columns: Vec<ColumnRule>,
    /// Nothing in responses is masked.
    pub unmasked: bool,
}

impl Profile {
    /// Whether this profile leaves anything unmasked (so it needs an explicit assignment).
    pub fn keeps_anything(&self) -> bool {
        self.unmasked
            || self.strategies.contains(&MaskStrategy::Keep)
            || self
                .columns
                .iter()
                .any(|c| c.strategy == MaskStrategy::Keep)
    }

    /// Whether any column rule can apply (a masked profile with column rules).
    pub fn has_column_rules(&self) -> bool {
        !self.unmasked && !self.columns.is_empty()
    }

    /// The rule for a whole row of `table` (a record holding every column): the strictest
    /// of the rules naming its columns and the bare ones (`keep` rules aside: a row holds the
    /// other columns too).
    pub fn row_rule(&self, table: &str) -> Option<MaskStrategy> {
        if self.unmasked {
            return None;
        }
        let base = table.rsplit('.').next().unwrap_or(table);
        strictest(
            self.columns
                .iter()
                .filter(|r| {
                    r.table
                        .as_deref()
                        .is_none_or(|t| t.eq_ignore_ascii_case(base))
                })
                .map(|r| r.strategy)
                .filter(|s| *s != MaskStrategy::Keep),
        )
    }

    /// The column rule for a result column named `column`, when the statement reads `tables`
    /// (names as written, possibly schema-qualified). A `table.column` rule beats a bare one.
    pub fn column_rule(&self, column: &str, tables: &[&str]) -> Option<MaskStrategy> {
        if !self.has_column_rules() {
            return None;
        }
        let base = |t: &str| t.rsplit('.').next().unwrap_or(t).to_ascii_lowercase();
        let column = column.to_ascii_lowercase();
        let mut bare = None;
        for rule in &self.columns {
            if rule.column != column {
                continue;
            }
            match &rule.table {
                Some(t)
                    if tables
                        .iter()
                        .any(|x| base(x) == *t || x.eq_ignore_ascii_case(t)) =>
                {
                    return Some(rule.strategy)
                }
                Some(_) => {}
                None => bare = Some(rule.strategy),
            }
        }
        bare
    }

    /// The column rules that apply inside JSON values of a statement reading `tables`, by
    /// object key; `None` when there are none.
    pub fn json_key_rules(&self, tables: &[&str]) -> Option<Arc<JsonKeyRules>> {
        if !self.has_column_rules() {
            return None;
        }
        let mut names: Vec<&str> = self.columns.iter().map(|c| c.column.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let rules: Vec<(String, MaskStrategy)> = names
            .into_iter()
            .filter_map(|n| Some((n.to_string(), self.column_rule(n, tables)?)))
            .collect();
        (!rules.is_empty()).then(|| Arc::new(JsonKeyRules(rules)))
    }

    fn strategy(&self, entity: EntityId) -> MaskStrategy {
        if self.unmasked {
            return MaskStrategy::Keep;
        }
        self.strategies
            .get(entity)
            .copied()
            .unwrap_or(MaskStrategy::Redact)
    }
}

/// The compiled `[masking]` configuration: detectors, profiles, the hash key.
pub struct Masker {
    scanner: Scanner,
    entities: Vec<String>,
    profiles: BTreeMap<String, Arc<Profile>>,
    /// What the ledger and recordings get: every detector, redacted.
    record: Profile,
    key: Option<Vec<u8>>,
    default_profile: String,
    assign: Vec<portcullis_core::config::MaskingAssignment>,
}

/// Who a session is, for choosing its masking profile.
pub struct Who<'a> {
    pub agent: &'a str,
    pub groups: &'a [String],
    pub connection: &'a str,
    /// The connection's `masking_profile`.
    pub connection_profile: Option<&'a str>,
    /// The session carries a business justification (a task grant's reason).
    pub justified: bool,
}

/// The profile a session got, and which `[[masking.assign]]` rule gave it.
pub struct Assigned {
    pub profile: Arc<Profile>,
    pub rule: Option<usize>,
}

impl Masker {
    /// Compiles a configuration. `key` is the `hash` strategy's key, if one is configured.
    pub fn new(cfg: &MaskingConfig, key: Option<Vec<u8>>) -> Result<Masker, MaskError> {
        if let Some(k) = &key {
            if k.len() < 16 {
                return Err(MaskError::ShortKey(k.len()));
            }
        }
        let mut entities: Vec<String> = BUILTIN_ENTITIES.iter().map(|s| s.to_string()).collect();
        entities.push(COLUMN_ENTITY.to_string());
        for d in &cfg.disabled {
            if !BUILTIN_ENTITIES.contains(&d.as_str()) {
                return Err(MaskError::UnknownEntity {
                    field: "disabled".into(),
                    name: d.clone(),
                    known: BUILTIN_ENTITIES.join(", "),
                });
            }
        }
        let scanner = Scanner::new(
            &mut entities,
            &cfg.disabled,
            &cfg.custom,
            &cfg.phone_regions,
        )?;
        let mut defined = cfg.profiles.clone();
        defined.entry("standard".into()).or_default();
        defined.entry("unmasked".into()).or_insert(MaskingProfile {
            unmasked: true,
            ..Default::default()
        });
        let mut profiles = BTreeMap::new();
        for (name, p) in &defined {
            let profile = compile_profile(name, p, &entities)?;
            let uses_hash = p.strategy == MaskStrategy::Hash
                || p.entities.values().any(|s| *s == MaskStrategy::Hash)
                || p.columns.values().any(|s| *s == MaskStrategy::Hash);
            if uses_hash && key.is_none() {
                return Err(MaskError::NoHashKey {
                    profile: name.clone(),
                });
            }
            profiles.insert(name.clone(), Arc::new(profile));
        }
        let known = || profiles.keys().cloned().collect::<Vec<_>>().join(", ");
        let default =
            profiles
                .get(&cfg.default_profile)
                .ok_or_else(|| MaskError::UnknownProfile {
                    field: "default_profile".into(),
                    name: cfg.default_profile.clone(),
                    known: known(),
                })?;
        if default.keeps_anything() {
            return Err(MaskError::ImplicitUnmasked {
                field: "default_profile".into(),
                profile: cfg.default_profile.clone(),
            });
        }
        for (i, a) in cfg.assign.iter().enumerate() {
            if !profiles.contains_key(&a.profile) {
                return Err(MaskError::UnknownProfile {
                    field: format!("assign[{i}].profile"),
                    name: a.profile.clone(),
                    known: known(),
                });
            }
        }
        let record = compile_profile("record", &MaskingProfile::default(), &entities)?;
        Ok(Masker {
            scanner,
            entities,
            profiles,
            record,
            key,
            default_profile: cfg.default_profile.clone(),
            assign: cfg.assign.clone(),
        })
    }

    /// Checks a connection's `masking_profile`: defined, and masking everything (a profile
    /// that keeps values is only reachable through `[[masking.assign]]`).
    pub fn check_connection_profile(&self, connection: &str, name: &str) -> Result<(), MaskError> {
        let field = format!("connections.{connection}.masking_profile");
        let p = self
            .profiles
            .get(name)
            .ok_or_else(|| MaskError::UnknownProfile {
                field: field.clone(),
                name: name.to_string(),
                known: self.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        if p.keeps_anything() {
            return Err(MaskError::ImplicitUnmasked {
                field,
                profile: name.to_string(),
            });
        }
        Ok(())
    }

    /// The profile of a session: the first matching `[[masking.assign]]` rule, else the
    /// connection's profile, else the default.
    pub fn assign(&self, who: &Who) -> Assigned {
        for (i, a) in self.assign.iter().enumerate() {
            let agent = a.agents.is_empty() || a.agents.iter().any(|x| x == who.agent);
            let group = a.groups.is_empty() || a.groups.iter().any(|g| who.groups.contains(g));
            let conn =
                a.connections.is_empty() || a.connections.iter().any(|c| c == who.connection);
            let why = !a.require_justification || who.justified;
            if agent && group && conn && why {
                if let Some(p) = self.profiles.get(&a.profile) {
                    return Assigned {
                        profile: p.clone(),
                        rule: Some(i),
                    };
                }
            }
        }
        let name = who.connection_profile.unwrap_or(&self.default_profile);
        let profile = self
            .profiles
            .get(name)
            .filter(|p| !p.keeps_anything())
            .or_else(|| self.profiles.get(&self.default_profile))
            .cloned()
            // `new` made sure the default exists; the record profile masks everything.
            .unwrap_or_else(|| Arc::new(self.record.clone()));
        Assigned {
            profile,
            rule: None,
        }
    }

    /// Entity names, indexed by [`EntityId`].
    pub fn entities(&self) -> &[String] {
        &self.entities
    }

    /// A profile by name.
    pub fn profile(&self, name: &str) -> Option<Arc<Profile>> {
        self.profiles.get(name).cloned()
    }

    /// Every validated finding in `hay`, left to right.
    pub fn findings(&self, hay: &[u8]) -> Vec<Finding> {
        let mut v = Vec::new();
        self.scanner.scan(hay, |f| v.push(f));
        v
    }

    /// Free text masked for a profile (`null` findings are redacted: text has no NULL).
    pub fn mask_text<'a>(
        &self,
        profile: &Profile,
        text: &'a str,
        counts: &mut Counts,
    ) -> Cow<'a, str> {
        if profile.unmasked {
            return Cow::Borrowed(text);
        }
        match self.apply(profile, text.as_bytes(), counts, false) {
            Applied::Unchanged => Cow::Borrowed(text),
            // Replacements are ASCII and findings end on character boundaries.
            Applied::Changed(bytes) | Applied::Null(Some(bytes)) => {
                Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())
            }
            Applied::Null(None) => Cow::Borrowed(text),
        }
    }

    /// What the ledger keeps of a text: every detector, redacted, whatever the session's
    /// profile.
    pub fn mask_record<'a>(&self, text: &'a str, counts: &mut Counts) -> Cow<'a, str> {
        self.mask_text(&self.record, text, counts)
    }

    /// Overwrites every finding with `*`, keeping the length (for byte streams whose framing
    /// must not move, such as session recordings). Returns how many were blanked.
    pub fn blank_in_place(&self, bytes: &mut [u8]) -> usize {
        let mut spans = Vec::new();
        self.scanner.scan(bytes, |f| spans.push(f.span));
        for s in &spans {
            bytes[s.clone()].fill(b'*');
        }
        spans.len()
    }

    /// One value of a result row, masked for `profile`, its column `rule` (if any) and what
    /// the value is (`kind`).
    pub fn mask_field(
        &self,
        profile: &Profile,
        value: &[u8],
        kind: FieldKind,
        rule: Option<MaskStrategy>,
        counts: &mut Counts,
    ) -> Field {
        if profile.unmasked {
            return Field::Unchanged;
        }
        if let Some(strategy) = rule {
            if strategy == MaskStrategy::Keep {
                return Field::Unchanged;
            }
            counts.add(self.column_entity());
            return match kind {
                FieldKind::Text => match strategy::whole(
                    strategy,
                    value,
                    &self.column_label(value),
                    self.key.as_deref(),
                ) {
                    Some(v) => Field::Value(v),
                    None => Field::Null,
                },
                _ => Field::Null,
            };
        }
        match kind {
            FieldKind::Opaque => Field::Unchanged,
            FieldKind::Text => match self.apply(profile, value, counts, true) {
                Applied::Unchanged => Field::Unchanged,
                Applied::Changed(v) => Field::Value(v),
                Applied::Null(_) => Field::Null,
            },
            FieldKind::Typed => match self.apply(profile, value, counts, true) {
                Applied::Unchanged => Field::Unchanged,
                _ => Field::Null,
            },
            FieldKind::Json => match self.apply(profile, value, counts, true) {
                Applied::Unchanged => Field::Unchanged,
                Applied::Changed(v)
                    if serde_json::from_slice::<serde::de::IgnoredAny>(&v).is_ok() =>
                {
                    Field::Value(v)
                }
                _ => Field::Null,
            },
            FieldKind::JsonbBinary => {
                let Some((&version, body)) = value.split_first() else {
                    return Field::Unchanged;
                };
                match self.mask_field(profile, body, FieldKind::Json, None, counts) {
                    Field::Value(v) => {
                        let mut out = Vec::with_capacity(v.len() + 1);
                        out.push(version);
                        out.extend_from_slice(&v);
                        Field::Value(out)
                    }
                    other => other,
                }
            }
        }
    }

    /// A JSON value (text, or binary jsonb with `binary`) whose object keys may name ruled
    /// columns (`SELECT to_jsonb(c) FROM customers c`): those values are masked by their
    /// rule (a redaction or partial value as a JSON string, `null` for the null strategy),
    /// then the detectors run on the whole as for any JSON value.
    pub fn mask_json(
        &self,
        profile: &Profile,
        value: &[u8],
        binary: bool,
        keys: &JsonKeyRules,
        counts: &mut Counts,
    ) -> Field {
        let kind = if binary {
            FieldKind::JsonbBinary
        } else {
            FieldKind::Json
        };
        if profile.unmasked {
            return Field::Unchanged;
        }
        let (prefix, doc) = match (binary, value.split_first()) {
            (true, Some((v, body))) => (Some(*v), body),
            (true, None) => return Field::Unchanged,
            (false, _) => (None, value),
        };
        let hits = match json::key_hits(doc, keys) {
            Some(h) if !h.is_empty() => h,
            // Nothing keyed, or unreadable: the detectors alone.
            _ => return self.mask_field(profile, value, kind, None, counts),
        };
        let mut out = Vec::with_capacity(value.len() + 16);
        out.extend(prefix);
        let mut last = 0;
        for h in hits {
            out.extend_from_slice(&doc[last..h.start]);
            last = h.end;
            // NULL stays NULL, as in a column.
            if h.strategy == MaskStrategy::Keep || &doc[h.start..h.end] == b"null" {
                out.extend_from_slice(&doc[h.start..h.end]);
                continue;
            }
            counts.add(self.column_entity());
            let raw = &doc[h.start..h.end];
            // A string's own text; anything else (a number, an object) as written.
            let text: Vec<u8> = match serde_json::from_slice::<String>(raw) {
                Ok(s) => s.into_bytes(),
                Err(_) => raw.to_vec(),
            };
            match strategy::whole(
                h.strategy,
                &text,
                &self.column_label(&text),
                self.key.as_deref(),
            ) {
                // Replacements are ASCII without quotes or backslashes (see `strategy`),
                // except for kept non-ASCII characters, which JSON strings carry as they are.
                Some(v) => {
                    out.push(b'"');
                    for &b in &v {
                        match b {
                            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
                            c if c < 0x20 => out.push(b' '),
                            c => out.push(c),
                        }
                    }
                    out.push(b'"');
                }
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(&doc[last..]);
        match self.mask_field(profile, &out, kind, None, counts) {
            Field::Unchanged => Field::Value(out),
            other => other,
        }
    }

    fn column_entity(&self) -> EntityId {
        // Always present: pushed right after the built-ins.
        BUILTIN_ENTITIES.len()
    }

    /// The label a column rule's redaction and hash use: the entity the value holds, if one
    /// detector finds it whole, else `REDACTED`.
    fn column_label(&self, value: &[u8]) -> String {
        let f = self.findings(value);
        match f.as_slice() {
            [one] if one.span.len() * 2 >= value.len() => self.entities[one.entity].clone(),
            _ => "REDACTED".into(),
        }
    }

    fn apply(&self, profile: &Profile, hay: &[u8], counts: &mut Counts, field: bool) -> Applied {
        let mut out: Option<Vec<u8>> = None;
        let mut last = 0;
        let mut null = false;
        self.scanner.scan(hay, |f| {
            let strategy = profile.strategy(f.entity);
            if strategy == MaskStrategy::Keep {
                return;
            }
            counts.add(f.entity);
            if strategy == MaskStrategy::Null && field {
                null = true;
                return;
            }
            let buf = out.get_or_insert_with(|| Vec::with_capacity(hay.len() + 16));
            buf.extend_from_slice(&hay[last..f.span.start]);
            let name = &self.entities[f.entity];
            strategy::finding(
                strategy,
                &hay[f.span.clone()],
                name,
                self.key.as_deref(),
                buf,
            );
            last = f.span.end;
        });
        if null {
            return Applied::Null(None);
        }
        match out {
            None => Applied::Unchanged,
            Some(mut buf) => {
                buf.extend_from_slice(&hay[last..]);
                Applied::Changed(buf)
            }
        }
    }
}

enum Applied {
    Unchanged,
    Changed(Vec<u8>),
    /// A `null` strategy applied (in text: the redacted text, if any).
    Null(Option<Vec<u8>>),
}

fn compile_profile(
    name: &str,
    p: &MaskingProfile,
    entities: &[String],
) -> Result<Profile, MaskError> {
    let mut strategies = vec![p.strategy; entities.len()];
    for (entity, s) in &p.entities {
        let i =
            entities
                .iter()
                .position(|e| e == entity)
                .ok_or_else(|| MaskError::UnknownEntity {
                    field: format!("profiles.{name}.entities"),
                    name: entity.clone(),
                    known: entities.join(", "),
                })?;
        strategies[i] = *s;
    }
    let columns = p
        .columns
        .iter()
        .map(|(key, strategy)| {
            let key = key.to_ascii_lowercase();
            let (table, column) = match key.rsplit_once('.') {
                Some((t, c)) => (
                    Some(t.rsplit('.').next().unwrap_or(t).to_string()),
                    c.to_string(),
                ),
                None => (None, key.clone()),
            };
            ColumnRule {
                table,
                column,
                strategy: *strategy,
            }
        })
        .collect();
    Ok(Profile {
        name: name.to_string(),
        strategies,
        columns,
        unmasked: p.unmasked,
    })
}

#[cfg(test)]
mod tests;
