//! What changing a run-time setting is, whichever syntax changes it.
//!
//! `SET x = v`, `SET LOCAL x = v`, `RESET x`, `SET x TO DEFAULT`, `set_config('x', 'v', …)`
//! and `SET TRANSACTION …`/`BEGIN …` options all end in the same place in the server, so they
//! are classed by one function, [`class_of`], by the setting's name and, where it matters, its
//! value. Most settings only shape the session's own output and limits (`session`); a few
//! change who statements run as (`dcl`), how later SQL text is read, or switch off a protection
//! (`admin`).

use crate::Action;

/// The value a statement gives a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// A constant the statement spells out.
    To(&'a str),
    /// An expression, `FROM CURRENT`, or a list: the gateway cannot tell which value.
    Unknown,
    /// `RESET x`, `SET x TO DEFAULT`: back to the value the session started with.
    Default,
}

/// The note of every statement that may turn the read-only transaction off.
pub const READ_WRITE_NOTE: &str =
    "turns off the read-only transaction the gateway set (default_transaction_read_only)";

/// The class a statement needs to give setting `name` (any case) the value `value`, and why
/// when the class is not plain `session`.
pub fn class_of(name: &str, value: Value<'_>) -> (Action, Option<String>) {
    let name = name.to_ascii_lowercase();
    let is_on = |v: &Value<'_>| matches!(v, Value::To(x) if parses_true(x));
    match name.as_str() {
        // RESET ROLE returns to the role configured for the gateway's login.
        "role" if value == Value::Default => (Action::Session, None),
        "role" | "session_authorization" => (
            Action::Dcl,
            Some(format!("setting {name} changes the role statements run as")),
        ),
        // RESET and SET … TO DEFAULT return to the value at login, which is what the gateway
        // set in the startup packet for a read-only session. (Not so for transaction_read_only:
        // RESET in a transaction turns it off.)
        "default_transaction_read_only" if is_on(&value) || value == Value::Default => {
            (Action::Session, None)
        }
        "transaction_read_only" if is_on(&value) => (Action::Transaction, None),
        "default_transaction_read_only" | "transaction_read_only" => {
            (Action::Admin, Some(format!("{name}: {READ_WRITE_NOTE}")))
        }
        "transaction_isolation" | "transaction_deferrable" => (Action::Transaction, None),
        "client_encoding" if matches!(value, Value::To(x) if is_utf8(x)) => (Action::Session, None),
        "standard_conforming_strings" if is_on(&value) => (Action::Session, None),
        "standard_conforming_strings" | "backslash_quote" | "client_encoding" => (
            Action::Admin,
            Some(format!(
                "setting {name} changes how the server reads later SQL text; the gateway parses it with the defaults"
            )),
        ),
        "session_replication_role" => (
            Action::Admin,
            Some("session_replication_role = replica turns off triggers and foreign-key checks".into()),
        ),
        "search_path" => (
            Action::Session,
            Some("setting search_path changes which tables unqualified names mean".into()),
        ),
        // Everything else shapes only this session (output formats, timeouts, planner knobs)
        // or is a server setting that a session cannot change (the server refuses it).
        _ => (Action::Session, None),
    }
}

/// PostgreSQL's `parse_bool` for "true": `on`, `1`, and any prefix of `true` or `yes`, any
/// case. Anything else (including what the server would refuse) is not true.
pub fn parses_true(v: &str) -> bool {
    let v = v.trim().to_ascii_lowercase();
    !v.is_empty() && (v == "on" || v == "1" || "true".starts_with(&v) || "yes".starts_with(&v))
}

/// `client_encoding = UTF8` keeps the text the server reads the text the gateway parsed.
fn is_utf8(v: &str) -> bool {
    let x = v.trim().to_ascii_lowercase().replace(['-', '_'], "");
    matches!(x.as_str(), "utf8" | "unicode")
}
