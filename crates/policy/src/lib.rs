//! portcullis policy: what an agent may do, decided on the parsed command.
//!
//! * [`sql`] — where a PostgreSQL statement is classified (libpg_query).
//! * [`action`] — the command classes, one Cedar action each.
//! * [`engine`] — Cedar policies: loading with file:line errors, the published schema,
//!   decisions (allow / deny / review) with the policies that made them.
//! * [`gate`] — what protocol crates call: the policies in force, swapped on reload.
//! * [`cache`] — classifications of repeated statements.

pub mod action;
pub mod cache;
pub mod engine;
pub mod error;
pub mod gate;
pub mod sql;

pub use action::Action;
pub use engine::{Actor, Decision, GrantScope, PolicySet, Request, Target, Verdict};
pub use error::PolicyError;
pub use gate::{Gate, GateDecision, GateState};
