//! The command classes policies speak of: one Cedar action per class.
//!
//! A statement may need several classes (`WITH d AS (DELETE …) SELECT …` is both `delete` and
//! `select`); it is allowed only if every class it needs is allowed on every object it touches.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A command class. The order is the privilege rank used to say "at least as privileged":
/// reading < session housekeeping < writing < schema changes < roles and privileges < admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Transaction control: BEGIN, COMMIT, ROLLBACK, SAVEPOINT, …
    Transaction,
    /// Session settings and housekeeping: SET (not role), SHOW, RESET, DISCARD, PREPARE,
    /// DEALLOCATE, LISTEN, …
    Session,
    /// Reads rows: SELECT, VALUES, TABLE, EXPLAIN without ANALYZE, FETCH.
    Select,
    /// `COPY … TO STDOUT` (a bulk read).
    CopyOut,
    /// Calls a procedure (`CALL`), sends NOTIFY, calls a function with side effects (nextval,
    /// pg_notify, …) or a function by OID through the protocol's FunctionCall message.
    FunctionCall,
    Insert,
    Update,
    Delete,
    Merge,
    /// `COPY … FROM STDIN` (a bulk write).
    CopyIn,
    Truncate,
    /// Schema changes: CREATE, ALTER, DROP, COMMENT, SELECT INTO, …
    Ddl,
    /// Privileges and roles: GRANT, REVOKE, CREATE/ALTER/DROP ROLE, SET ROLE,
    /// SET SESSION AUTHORIZATION, set_config('role', …).
    Dcl,
    /// Server administration and escapes from SQL's privilege model: DO blocks, COPY PROGRAM or
    /// to/from server files, ALTER SYSTEM, LOAD, VACUUM, CHECKPOINT, CREATE EXTENSION, file
    /// and backend-signalling functions, dblink, functions that run SQL from a string, …
    Admin,
    /// Does not parse as PostgreSQL SQL, or names a prepared statement the gateway does not know.
    Unknown,
}

impl Action {
    pub const ALL: [Action; 15] = [
        Action::Transaction,
        Action::Session,
        Action::Select,
        Action::CopyOut,
        Action::FunctionCall,
        Action::Insert,
        Action::Update,
        Action::Delete,
        Action::Merge,
        Action::CopyIn,
        Action::Truncate,
        Action::Ddl,
        Action::Dcl,
        Action::Admin,
        Action::Unknown,
    ];

    /// The Cedar action id (`Portcullis::Action::"<name>"`).
    pub fn name(self) -> &'static str {
        match self {
            Action::Transaction => "transaction",
            Action::Session => "session",
            Action::Select => "select",
            Action::CopyOut => "copy_out",
            Action::FunctionCall => "function_call",
            Action::Insert => "insert",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Merge => "merge",
            Action::CopyIn => "copy_in",
            Action::Truncate => "truncate",
            Action::Ddl => "ddl",
            Action::Dcl => "dcl",
            Action::Admin => "admin",
            Action::Unknown => "unknown",
        }
    }

    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether the class changes data or the database (everything above reading).
    pub fn writes(self) -> bool {
        self >= Action::FunctionCall
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
