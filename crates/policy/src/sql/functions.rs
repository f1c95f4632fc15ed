//! Functions that change what a statement is.
//!
//! A `SELECT` that calls `pg_read_file` reads the server's disk, one that calls `query_to_xml`
//! runs whatever SQL its argument holds. Such calls lift the statement to the class given here.
//! Names are matched without their schema (`pg_catalog.pg_ls_dir` and `pg_ls_dir` are the same
//! function to the server unless a user shadows it, and shadowing only makes the match
//! over-cautious). `set_config` is not here: it is classed by the setting it changes
//! (`settings.rs`).

use crate::Action;

/// The class a call to `name` (unqualified, as PostgreSQL folded it) adds to its statement,
/// with why; `None` for ordinary functions.
pub fn class_of(name: &str) -> Option<(Action, &'static str)> {
    const ADMIN_PREFIXES: &[(&str, &str)] = &[
        ("pg_ls_", "lists server directories"),
        (
            "dblink",
            "opens connections to other servers and runs SQL there",
        ),
        ("pg_file_", "writes server files (adminpack)"),
        ("pg_stat_reset", "resets server statistics"),
        ("pg_replication_origin_", "changes replication state"),
        ("pg_wal_replay_", "controls WAL replay"),
        ("query_to_xml", "runs the SQL held in its argument"),
        ("cursor_to_xml", "reads a cursor by name"),
        (
            "table_to_xml",
            "reads a table named in a string, out of the policy's sight",
        ),
        (
            "schema_to_xml",
            "reads every table of a schema named in a string",
        ),
        ("database_to_xml", "reads every table of the database"),
        ("crosstab", "runs the SQL held in its argument (tablefunc)"),
        ("connectby", "reads a table named in a string (tablefunc)"),
        (
            "pg_logical_slot_",
            "consumes a replication slot: every table's changes",
        ),
        ("pg_replication_slot_advance", "moves a replication slot"),
        ("pgstat", "reads a table named in a string (pgstattuple)"),
        ("get_raw_page", "returns a table's raw pages (pageinspect)"),
    ];
    const ADMIN: &[(&str, &str)] = &[
        ("pg_read_file", "reads server files"),
        ("pg_read_binary_file", "reads server files"),
        ("pg_stat_file", "inspects server files"),
        ("pg_logdir_ls", "lists server directories"),
        ("lo_import", "reads a server file into a large object"),
        ("lo_export", "writes a large object to a server file"),
        ("pg_terminate_backend", "terminates other sessions"),
        ("pg_cancel_backend", "cancels other sessions' queries"),
        ("pg_reload_conf", "reloads the server configuration"),
        ("pg_rotate_logfile", "rotates the server log"),
        ("pg_promote", "promotes a standby"),
        ("pg_switch_wal", "forces a WAL switch"),
        ("pg_create_restore_point", "creates a restore point"),
        ("pg_backup_start", "starts a base backup"),
        ("pg_backup_stop", "stops a base backup"),
        ("pg_start_backup", "starts a base backup"),
        ("pg_stop_backup", "stops a base backup"),
        (
            "pg_create_physical_replication_slot",
            "creates a replication slot",
        ),
        (
            "pg_create_logical_replication_slot",
            "creates a replication slot",
        ),
        ("pg_drop_replication_slot", "drops a replication slot"),
        (
            "pg_copy_physical_replication_slot",
            "copies a replication slot",
        ),
        (
            "pg_copy_logical_replication_slot",
            "copies a replication slot",
        ),
        ("pg_log_backend_memory_contexts", "writes to the server log"),
        ("pg_import_system_collations", "changes the catalog"),
        ("pg_execute_server_program", "runs server programs"),
        ("ts_stat", "runs the SQL held in its argument"),
        ("ts_rewrite", "can run the SQL held in its argument"),
        ("query_to_xmlschema", "runs the SQL held in its argument"),
    ];
    const SIDE_EFFECTS: &[(&str, &str)] = &[
        ("nextval", "advances a sequence"),
        ("setval", "sets a sequence"),
        ("pg_notify", "notifies other sessions"),
        ("lo_create", "creates a large object"),
        ("lo_creat", "creates a large object"),
        ("lo_unlink", "deletes a large object"),
        ("lo_put", "writes a large object"),
        ("lo_from_bytea", "creates a large object"),
        ("lowrite", "writes a large object"),
        ("lo_truncate", "truncates a large object"),
        ("lo_truncate64", "truncates a large object"),
        ("pg_advisory_lock", "takes an advisory lock"),
        ("pg_advisory_xact_lock", "takes an advisory lock"),
        ("pg_advisory_lock_shared", "takes an advisory lock"),
        ("pg_advisory_xact_lock_shared", "takes an advisory lock"),
        ("pg_try_advisory_lock", "takes an advisory lock"),
        ("pg_try_advisory_xact_lock", "takes an advisory lock"),
        ("pg_try_advisory_lock_shared", "takes an advisory lock"),
        ("pg_try_advisory_xact_lock_shared", "takes an advisory lock"),
        ("pg_sleep", "holds the session"),
        ("pg_sleep_for", "holds the session"),
        ("pg_sleep_until", "holds the session"),
    ];
    if let Some((_, why)) = ADMIN.iter().find(|(n, _)| *n == name) {
        return Some((Action::Admin, why));
    }
    if let Some((_, why)) = ADMIN_PREFIXES.iter().find(|(p, _)| name.starts_with(p)) {
        return Some((Action::Admin, why));
    }
    if let Some((_, why)) = SIDE_EFFECTS.iter().find(|(n, _)| *n == name) {
        return Some((Action::FunctionCall, why));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_functions_are_lifted() {
        assert_eq!(class_of("pg_read_file").map(|c| c.0), Some(Action::Admin));
        assert_eq!(class_of("pg_ls_waldir").map(|c| c.0), Some(Action::Admin));
        assert_eq!(class_of("dblink_exec").map(|c| c.0), Some(Action::Admin));
        // Classed by the setting it changes (see `settings`), not by its name.
        assert_eq!(class_of("set_config"), None);
        assert_eq!(class_of("nextval").map(|c| c.0), Some(Action::FunctionCall));
        assert_eq!(class_of("lower"), None);
        assert_eq!(class_of("count"), None);
    }
}
