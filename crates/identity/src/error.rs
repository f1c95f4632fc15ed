//! The one error type of this crate.

/// Everything that can go wrong while loading agent verifiers or authenticating an agent.
///
/// Messages about client input never echo secrets and never say whether an agent exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// A stored verifier string could not be parsed.
    #[error(
        "agent key_hash is not a SCRAM-SHA-256 verifier ({reason}): expected \
         SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>; \
         create one with `portcullis agent create NAME`"
    )]
    InvalidVerifier { reason: &'static str },

    /// The verifier of a named agent in the configuration could not be parsed.
    #[error(
        "agent {agent:?}: key_hash is not a SCRAM-SHA-256 verifier ({reason}): expected \
         SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>; \
         recreate it with `portcullis agent create {agent}`"
    )]
    InvalidAgentKeyHash { agent: String, reason: &'static str },

    /// Two agents in the configuration share a name.
    #[error("agent {agent:?} is defined more than once; agent names must be unique, remove or rename one")]
    DuplicateAgent { agent: String },

    /// The client picked a SASL mechanism we do not offer.
    #[error(
        "client selected SASL mechanism {mechanism:?}; only SCRAM-SHA-256 is offered \
         (SCRAM-SHA-256-PLUS channel binding is not supported)"
    )]
    UnsupportedMechanism { mechanism: String },

    /// The client insisted on channel binding (`p=` in the GS2 header).
    #[error(
        "client requires SCRAM channel binding, which portcullis does not offer; \
         connect with channel_binding=prefer or channel_binding=disable"
    )]
    ChannelBindingNotSupported,

    /// A SCRAM message from the client did not follow RFC 5802 / RFC 7677.
    #[error("malformed SCRAM-SHA-256 message from client: {reason}; the client must follow RFC 5802/RFC 7677")]
    MalformedScramMessage { reason: &'static str },

    /// A step of the SCRAM exchange was called out of order, or after the exchange ended.
    #[error("SCRAM exchange out of order: expected {expected}; start a new authentication")]
    OutOfOrder { expected: &'static str },

    /// Wrong key or unknown agent; deliberately does not say which.
    #[error(
        "authentication failed: unknown agent or wrong API key; check the user name and \
         the key, or issue a new key with `portcullis agent create NAME`"
    )]
    AuthenticationFailed,

    /// A SAML 2.0 assertion was refused (signature, audience, recipient, validity, format).
    #[error("SAML assertion refused: {reason}")]
    SamlRejected { reason: String },

    /// A token (JWT) was refused; the reason says which check failed.
    #[error("token refused: {reason}")]
    TokenRejected { reason: String },

    /// An identity provider could not be reached or answered nonsense.
    /// Its message starts with "identity provider " (the PostgreSQL front end tells it from a
    /// refused token by that).
    #[error("identity provider {issuer:?} unavailable: {reason}; check the issuer's URLs (issuer, discovery_url, jwks_uri), its ca_file, and that the gateway can reach it")]
    IssuerUnavailable { issuer: String, reason: String },

    /// A token that must speak for a person (a token exchange's `subject_token`, the token of
    /// whoever creates, lists or revokes grants) is an agent's own, or the subject and the
    /// actor of an exchange are the same principal. See "Who counts as a person" in
    /// docs/identity.md.
    #[error("not a person: {reason}")]
    NotAPerson { reason: String },

    /// A task grant request was refused, or a grant credential is no longer valid.
    #[error("grant refused: {reason}")]
    GrantRefused { reason: String },

    /// Identity configuration or key material is unusable.
    #[error("{what}: {reason}")]
    Setup { what: String, reason: String },
}
