//! Ledger events.
//!
//! An event is stored as a row `(seq, ts_us, session_id, kind, data, prev_hash, hash)` where
//! `data` is the JSON form of [`EventData`]. Events are self-contained: a statement event names
//! the agent, the client address, the connection and the protocol, so one row answers "who ran
//! what, where" without joins.

use serde::{Deserialize, Serialize};

/// An event on its way into the ledger. The ledger assigns the sequence number and the hashes.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub ts_us: i64,
    pub session_id: String,
    pub data: EventData,
}

impl NewEvent {
    pub fn new(session_id: impl Into<String>, data: EventData) -> Self {
        NewEvent {
            ts_us: crate::now_us(),
            session_id: session_id.into(),
            data,
        }
    }
}

/// Who acted: the agent's service account, how it proved it and, when it presented a token,
/// who that token says it acts for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Principal {
    /// The agent (service account) name: from the configuration for API keys, from the
    /// token's claims for tokens.
    pub agent: String,
    /// How the agent authenticated: `scram-sha-256` or `password` (API key), `oidc` (a JWT
    /// from a configured issuer), `gateway-token` (a token this gateway issued by token
    /// exchange or SAML bearer grant) or `grant` (a task grant's credential).
    pub auth_method: String,
    /// What the token said, for token logins (absent for API keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Box<Identity>>,
}

impl Principal {
    /// The human on whose behalf the agent acts, when the credential names one.
    pub fn requester(&self) -> Option<&str> {
        self.identity.as_deref().and_then(|i| i.requester())
    }
}

/// A verified token's facts, as recorded on every event of the session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// `iss` of the token the client presented.
    pub issuer: String,
    /// `sub` of that token (for a delegated token, the human requester).
    pub subject: String,
    /// `jti`, when the token has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Groups from the issuer's groups claim (and the configuration).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The delegation chain, from the human requester to the agent acting now (RFC 8693
    /// `act`, outermost first). Empty when the agent acts on its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<ChainLink>,
    /// The task grant the credential belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantRef>,
    /// `exp` of the token (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl Identity {
    /// The human requester: the first link of a delegation chain, or a grant's requester.
    pub fn requester(&self) -> Option<&str> {
        if let Some(g) = &self.grant {
            return Some(&g.requester);
        }
        if self.chain.len() > 1 {
            return self.chain.first().map(|l| l.subject.as_str());
        }
        None
    }

    /// The business justification: a grant's reason.
    pub fn justification(&self) -> Option<&str> {
        self.grant.as_ref().map(|g| g.reason.as_str())
    }
}

/// One identity in a delegation chain.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainLink {
    /// The name the gateway knows this principal by (for an agent, its agent name).
    pub subject: String,
    /// Who vouched for it: the `iss` of the token it presented.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    /// For an agent that joined the chain by presenting its own token (the `actor_token` of
    /// a token exchange): that token's `sub` at `issuer`, i.e. the service account as its
    /// identity provider knows it, which may differ from `subject` (the agent name, taken
    /// from the issuer's `agent_claim`). Absent in events written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_subject: Option<String>,
}

/// The task grant behind a session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantRef {
    pub id: String,
    /// The one connection it is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub connection: String,
    /// Who issued it (the person who asked the agent to act).
    pub requester: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Command classes it allows (empty = whatever the agent's policy allows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
}

/// A task grant as issued: the person, the agent, the scope and the time limit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantRecord {
    pub id: String,
    pub agent: String,
    pub connection: String,
    /// Subject of the person who issued it, and their issuer.
    pub requester: String,
    pub requester_issuer: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// Seconds since the epoch.
    pub created_at: i64,
    pub expires_at: i64,
}

/// A bound parameter of an extended-protocol statement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParamValue {
    /// PostgreSQL type OID (0 = not specified by the client, inferred by the server).
    pub type_oid: u32,
    /// Type name when the OID is a well-known built-in type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// `text` or `binary`.
    pub format: String,
    /// The value as text; binary values of known types are decoded, others are hex (`\x…`).
    /// `None` is SQL NULL.
    pub value: Option<String>,
}

/// Fields of an event encrypted under a retention segment's key. Deleting the key (retention)
/// deletes the fields for good, while the event, its hash and the chain stay verifiable.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sealed {
    /// The segment: `<connection>/<YYYY-MM-DD>` (UTC day of the event).
    pub segment: String,
    /// `base64(nonce (12) ‖ AES-256-GCM ciphertext and tag)` of the sealed fields as JSON.
    pub data: String,
    /// Set by readers (never stored) when retention deleted the segment's key: the sealed
    /// fields are gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// How a statement ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The target ran it and reported completion.
    Ok,
    /// The target reported an error (see `sqlstate`).
    Error,
    /// An extended-protocol portal ran out of its row limit (PortalSuspended).
    Suspended,
    /// Not executed: an earlier message of the same pipeline segment failed.
    Skipped,
    /// The gateway refused to forward it (see `message`).
    Refused,
    /// The session ended before the target answered.
    Aborted,
}

/// How many values were masked, per entity name.
pub type MaskedCounts = std::collections::BTreeMap<String, u64>;

/// The masking profile a session got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskingChoice {
    pub profile: String,
    /// Nothing in the responses is masked (an explicit assignment gave this session raw data).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unmasked: bool,
    /// Which `[[masking.assign]]` rule chose it (index from 0); absent: the connection's or the
    /// default profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
}

/// What the policy engine made of a statement, as recorded with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DecisionRecord {
    /// Command classes the statement needs (`select`, `delete`, `ddl`, …).
    pub classes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    /// Why the classifier lifted the statement (`DO runs procedural code …`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Ids of the policies that decided (empty for a default deny).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// Hash of the policy snapshot in force: the `policy_snapshot` event with this hash holds
    /// the full text of every policy.
    pub snapshot: String,
}

/// A file that was part of a loaded configuration version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotFile {
    pub path: String,
    pub sha256: String,
    pub text: String,
}

/// The payload of a ledger event. Serialized as JSON with a `kind` tag.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventData {
    /// An agent proved its identity and the gateway reached the target.
    SessionOpen {
        principal: Principal,
        client_addr: String,
        connection: String,
        protocol: String,
        tls: bool,
        /// Startup parameters forwarded to the target (application_name, …).
        #[serde(default)]
        params: Vec<(String, String)>,
        /// The masking profile the session's responses get, and why (see docs/masking.md).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        masking: Option<MaskingChoice>,
    },
    /// The session ended.
    SessionClose {
        principal: Principal,
        connection: String,
        reason: String,
        duration_us: u64,
        /// Statements forwarded to the target.
        statements: u64,
        /// Statements the gateway refused (denied, or held for review) instead of forwarding.
        /// Absent from events written before it was counted: `None` means "not counted", not 0.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<u64>,
    },
    /// Credentials accepted.
    AuthSuccess {
        principal: Principal,
        client_addr: String,
        connection: String,
        protocol: String,
    },
    /// Credentials refused, or the connection could not be opened for this client.
    AuthFailure {
        /// The user name the client claimed.
        claimed_agent: String,
        /// The password exchange tried: `scram-sha-256` (an API-key agent), or `password` (a
        /// cleartext password over TLS: an API key or a token; the token's own method, `oidc`,
        /// `gateway-token` or `grant`, appears only once it is accepted). Empty when the
        /// client was refused before one was chosen (no TLS where required, no user name).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        auth_method: String,
        client_addr: String,
        connection: String,
        protocol: String,
        reason: String,
        /// SQLSTATE sent to the client.
        sqlstate: String,
    },
    /// A statement, recorded before it is forwarded to the target.
    Statement {
        principal: Principal,
        client_addr: String,
        connection: String,
        protocol: String,
        /// The exact SQL text (for the extended protocol, the prepared SQL).
        text: String,
        /// `simple`, `extended` or `function_call`.
        mode: String,
        /// Prepared statement name (extended protocol; empty = unnamed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        statement_name: Option<String>,
        /// Bound parameter values (extended protocol).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        params: Vec<ParamValue>,
        /// `allow`, `deny` or `review` (held for approval; refused until approvals exist).
        verdict: String,
        /// Why it was refused (absent when allowed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// How policy saw it: classification, deciding policies, snapshot in force.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decision: Option<Box<DecisionRecord>>,
        /// `text` and `params`, encrypted under the retention segment's key (the ledger
        /// seals them as it writes; readers open them, see `portcullis_ledger::seal`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sealed: Option<Sealed>,
        /// Values masked in `text`, `params` and `reason` before recording, per entity.
        #[serde(default, skip_serializing_if = "MaskedCounts::is_empty")]
        masked: MaskedCounts,
    },
    /// A configuration and policy version was put in force (at start and on every reload).
    PolicySnapshot {
        /// Hash of the policy files (what statement events name in `decision.snapshot`).
        hash: String,
        /// `start`, `SIGHUP` or `file change`.
        trigger: String,
        /// The configuration file and the policy files, full text.
        config: SnapshotFile,
        policies: Vec<SnapshotFile>,
    },
    /// A new configuration or policy version was refused; the previous one stays in force.
    PolicyRejected {
        trigger: String,
        /// What was wrong, with file and line.
        error: String,
        /// Hash of the version that stays in force.
        kept: String,
    },
    /// What became of a statement, written when the target answered.
    Result {
        /// Sequence number of the statement event this result belongs to.
        statement_seq: u64,
        outcome: Outcome,
        /// Command tags reported by the target (several for a multi-statement simple query).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tags: Vec<String>,
        rows: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sqlstate: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        duration_us: u64,
        /// `message`, encrypted under the retention segment's key (error messages can quote
        /// the data).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sealed: Option<Sealed>,
        /// Values masked in the response the client received, per entity (`COLUMN`: by a
        /// column rule).
        #[serde(default, skip_serializing_if = "MaskedCounts::is_empty")]
        masked: MaskedCounts,
    },
    /// The agent authenticated but its session could not be opened (unknown connection,
    /// target unreachable or refusing the gateway's login).
    ConnectFailure {
        principal: Principal,
        client_addr: String,
        connection: String,
        protocol: String,
        reason: String,
        sqlstate: String,
    },
    /// A client asked to cancel a running statement.
    Cancel {
        client_addr: String,
        /// Whether the cancel key matched a live session.
        matched: bool,
    },
    /// The client broke the protocol; the connection was closed.
    ProtocolError { client_addr: String, detail: String },
    /// A person issued a task grant for an agent.
    GrantCreated {
        grant: GrantRecord,
        client_addr: String,
    },
    /// A task grant was revoked; its live sessions were ended.
    GrantRevoked {
        id: String,
        /// Subject of the person who revoked it.
        by: String,
        client_addr: String,
        /// Sessions ended by the revocation.
        sessions_ended: u64,
    },
    /// Retention deleted the sealed fields of one segment (crypto-shredding: its key was
    /// destroyed). The events stay, with their hashes; their SQL text, parameters and error
    /// messages are gone.
    RetentionDeleted {
        /// The rule that decided it (`[[retention.rules]] name`).
        rule: String,
        /// The segment, `<connection>/<YYYY-MM-DD>`.
        segment: String,
        connection: String,
        /// The UTC day the segment covers.
        day: String,
        /// The events whose fields were sealed under it: first and last seq, and how many.
        first_seq: u64,
        last_seq: u64,
        events: u64,
        /// The segment's age when deleted, in days, and the rule's limits.
        age_days: u64,
        max_age_days: u64,
        /// Who ran retention (`gateway schedule`, or the user of `portcullis retention run`).
        by: String,
        /// What was deleted: empty for the sealed fields (the segment's key), `recordings`
        /// for the session-recording chunks of that connection and day (the events' range is
        /// then that of their `recording_chunk` events).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        what: String,
    },
    /// The token endpoint issued a gateway token (token exchange or SAML bearer grant).
    TokenIssued {
        /// `token-exchange` or `saml2-bearer`.
        grant_type: String,
        /// The identity the token carries (subject, chain, groups, jti, expiry).
        principal: Principal,
        client_addr: String,
    },
    /// One chunk of a session recording was stored (or could not be): the hash names the
    /// chunk in the recordings store, so the recording is as tamper-evident as the ledger.
    RecordingChunk {
        connection: String,
        /// 0, 1, 2, … within the session.
        index: u64,
        /// SHA-256 of the stored (compressed) chunk, lowercase hex: its name in the store.
        hash: String,
        /// Stored bytes, and the recorded bytes before compression.
        bytes: u64,
        raw_bytes: u64,
        /// Frames (reads relayed in one direction) in the chunk, and the time of the first
        /// and last, in microseconds since the session started.
        frames: u64,
        first_us: u64,
        last_us: u64,
        /// Why the chunk is not in the store, if it could not be written.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The token endpoint or the grants API refused a request.
    TokenRefused {
        /// The endpoint and grant type (`/oauth/token token-exchange`, `/v1/grants`, …).
        endpoint: String,
        client_addr: String,
        reason: String,
    },
}

impl EventData {
    /// The `kind` tag, also stored in its own column.
    pub fn kind(&self) -> &'static str {
        match self {
            EventData::SessionOpen { .. } => "session_open",
            EventData::SessionClose { .. } => "session_close",
            EventData::AuthSuccess { .. } => "auth_success",
            EventData::AuthFailure { .. } => "auth_failure",
            EventData::Statement { .. } => "statement",
            EventData::Result { .. } => "result",
            EventData::ConnectFailure { .. } => "connect_failure",
            EventData::Cancel { .. } => "cancel",
            EventData::ProtocolError { .. } => "protocol_error",
            EventData::PolicySnapshot { .. } => "policy_snapshot",
            EventData::PolicyRejected { .. } => "policy_rejected",
            EventData::GrantCreated { .. } => "grant_created",
            EventData::GrantRevoked { .. } => "grant_revoked",
            EventData::TokenIssued { .. } => "token_issued",
            EventData::RetentionDeleted { .. } => "retention_deleted",
            EventData::TokenRefused { .. } => "token_refused",
            EventData::RecordingChunk { .. } => "recording_chunk",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_column_matches_json_tag() {
        let ev = EventData::Cancel {
            client_addr: "127.0.0.1:1".into(),
            matched: true,
        };
        let json = serde_json::to_value(&ev).expect("serializes");
        assert_eq!(json["kind"], ev.kind());
        let back: EventData = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, ev);
    }

    /// An event written before `ChainLink::idp_subject` existed reads, and writes back byte
    /// for byte (so hashes over its JSON still match); a link without the field stays without
    /// it, and one with it round-trips.
    #[test]
    fn chain_links_without_idp_subject_read_and_write_back_unchanged() {
        let old = r#"{"kind":"auth_success","principal":{"agent":"agent-etl","auth_method":"gateway-token","identity":{"issuer":"urn:portcullis:gateway","subject":"alice@example.com","token_id":"j1","chain":[{"subject":"alice@example.com","issuer":"http://127.0.0.1:4000"},{"subject":"agent-etl","issuer":"http://127.0.0.1:4000"},{"subject":"planner"}],"expires_at":1700000000}},"client_addr":"127.0.0.1:5","connection":"db","protocol":"postgres"}"#;
        let ev: EventData = serde_json::from_str(old).expect("an old event parses");
        let EventData::AuthSuccess { principal, .. } = &ev else {
            panic!("auth_success expected, got {ev:?}")
        };
        let chain = &principal.identity.as_ref().expect("identity").chain;
        assert_eq!(chain.len(), 3);
        assert!(chain.iter().all(|l| l.idp_subject.is_none()));
        assert_eq!(chain[2].issuer, "");
        assert_eq!(serde_json::to_string(&ev).expect("serializes"), old);

        let link = ChainLink {
            subject: "agent-etl".into(),
            issuer: "https://idp.example".into(),
            idp_subject: Some("0oa1b2c3-service-account".into()),
        };
        let json = serde_json::to_string(&link).expect("serializes");
        assert_eq!(
            json,
            r#"{"subject":"agent-etl","issuer":"https://idp.example","idp_subject":"0oa1b2c3-service-account"}"#
        );
        let back: ChainLink = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, link);
    }

    /// A `session_close` event written before refused statements were counted still reads,
    /// with `refused: None`; a new one carries the count.
    #[test]
    fn session_close_without_refused_count_still_reads() {
        let old = r#"{"kind":"session_close","principal":{"agent":"a","auth_method":"scram-sha-256"},"connection":"c","reason":"client terminated the session","duration_us":5,"statements":2}"#;
        let ev: EventData = serde_json::from_str(old).expect("an older session_close reads");
        match &ev {
            EventData::SessionClose {
                statements,
                refused,
                ..
            } => {
                assert_eq!(*statements, 2);
                assert_eq!(*refused, None);
            }
            other => panic!("{other:?}"),
        }
        // Re-serialized, the older event keeps its exact fields (no `refused` appears).
        let again = serde_json::to_value(&ev).expect("serializes");
        assert!(again.get("refused").is_none(), "{again}");
        let new = match ev {
            EventData::SessionClose {
                principal,
                connection,
                reason,
                duration_us,
                statements,
                ..
            } => EventData::SessionClose {
                principal,
                connection,
                reason,
                duration_us,
                statements,
                refused: Some(1),
            },
            other => panic!("{other:?}"),
        };
        let json = serde_json::to_value(&new).expect("serializes");
        assert_eq!(json["refused"], 1);
        assert_eq!(
            serde_json::from_value::<EventData>(json).expect("reads"),
            new
        );
    }
}
