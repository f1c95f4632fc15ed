//! The one error type of this crate.

/// Why a masking configuration cannot be used. Each says which setting and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// A custom detector's regular expression does not compile.
    #[error("[[masking.custom]] entity {entity:?}: the pattern does not compile: {reason}")]
    Pattern { entity: String, reason: String },
    /// A custom detector has neither a pattern nor words, or both.
    #[error("[[masking.custom]] entity {entity:?}: give either `pattern` or `words`")]
    Custom { entity: String },
    /// A name used in the configuration is not a known entity.
    #[error("[masking] {field}: unknown entity {name:?} (known: {known})")]
    UnknownEntity {
        field: String,
        name: String,
        known: String,
    },
    /// A phone region is not an ISO 3166 code libphonenumber knows.
    #[error("[masking] phone_regions: unknown region {0:?} (use ISO 3166 codes such as \"US\", \"GB\", \"DE\")")]
    Region(String),
    /// A profile is named but not defined.
    #[error("[masking] {field}: no profile {name:?} (defined: {known})")]
    UnknownProfile {
        field: String,
        name: String,
        known: String,
    },
    /// A profile uses `hash` but no key is configured.
    #[error("[masking.profiles.{profile}] uses the `hash` strategy, which needs a key: set [masking] hmac_key_env or hmac_key_file (16 bytes or more)")]
    NoHashKey { profile: String },
    /// The hash key is too short.
    #[error("[masking] the hmac key has {0} bytes; use at least 16 (for example `openssl rand -hex 32`)")]
    ShortKey(usize),
    /// A profile that leaves values unmasked is reachable without an explicit assignment.
    #[error("[masking] {field}: profile {profile:?} leaves values unmasked; unmasked access must come from a [[masking.assign]] rule, so that it is an explicit decision")]
    ImplicitUnmasked { field: String, profile: String },
    /// The combined detector automaton could not be built.
    #[error("masking: the detector automaton could not be built: {0}")]
    Build(String),
}
