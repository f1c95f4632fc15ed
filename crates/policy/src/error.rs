//! The one error type of this crate.

/// Why a set of policies could not be loaded. Each names the file and line, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A policy file could not be read.
    #[error("{path}: cannot read policy file: {reason}")]
    Read { path: String, reason: String },

    /// A policy does not parse as Cedar.
    #[error("{path}:{line}:{column}: {message}{help}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
        help: String,
    },

    /// A policy parses but does not fit the schema (unknown action, attribute, type error…).
    #[error(
        "{path}:{line}:{column}: policy {policy}: {message}{help} (see `portcullis policy schema`)"
    )]
    Schema {
        path: String,
        line: usize,
        column: usize,
        policy: String,
        message: String,
        help: String,
    },

    /// Two policies share an `@id`.
    #[error(
        "{path}:{line}: policy id {id:?} is already used at {first}; give each policy a unique @id"
    )]
    DuplicateId {
        path: String,
        line: usize,
        id: String,
        first: String,
    },

    /// `@review` on a forbid policy.
    #[error("{path}:{line}: @review applies to permit policies (\"allowed after a human approves\"); a forbid is always a deny")]
    ReviewOnForbid { path: String, line: usize },

    /// Templates are not supported.
    #[error("{path}:{line}: policy templates (?principal/?resource) are not supported; write the policy out")]
    Template { path: String, line: usize },

    /// More than one of the above; each on its own line.
    #[error("{} problems in the policies:\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Several(Vec<PolicyError>),

    /// The built-in schema failed to load (a bug).
    #[error("the built-in Cedar schema does not load: {0}")]
    BuiltinSchema(String),
}
