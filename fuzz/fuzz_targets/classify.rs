//! Fuzzes the SQL classifier: `classify` must not panic on any text, and what it returns must
//! hang together (every class it needs is checked, and the other way round).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_policy::sql::classify;
use portcullis_policy::Action;
use std::collections::BTreeSet;

fuzz_target!(|sql: &str| {
    let c = classify(sql);
    assert!(!c.statements.is_empty(), "no statement for {sql:?}");
    assert!(!c.actions.is_empty(), "no class needed by {sql:?}");
    let checked: BTreeSet<Action> = c.checks.iter().map(|(a, _)| *a).collect();
    assert_eq!(checked, c.actions, "checks and classes differ for {sql:?}");
    for s in &c.statements {
        assert!(s.actions.is_subset(&c.actions));
        assert!(s.reads.is_subset(&c.reads));
        assert!(s.writes.is_subset(&c.writes));
    }
    if !c.writes.is_empty() {
        assert!(
            c.actions.iter().any(|a| a.writes()),
            "{sql:?} writes tables {:?} but needs no writing class",
            c.writes
        );
    }
});
