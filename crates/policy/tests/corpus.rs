//! The classification corpus (tests/corpus.toml): every statement's classes, tables and verdicts
//! under the example policies (examples/policies/*.cedar).
//!
//! Every case is checked and every mismatch collected, so one run shows all of them.

use portcullis_policy::sql::classify;
use portcullis_policy::{Action, Actor, PolicySet, Request, Target, Verdict};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus.toml");
const POLICIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
const MIN_CASES: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    sql: String,
    classes: Vec<String>,
    #[serde(default)]
    reads: Vec<String>,
    #[serde(default)]
    writes: Vec<String>,
    analyst: String,
    support: String,
    migrator: String,
    #[serde(default)]
    why: Option<String>,
    /// A known gap: the classifier is known to get this case wrong (explained here). The case
    /// must still mismatch — once it is fixed, remove the marker — and its mismatch is
    /// printed, not failed.
    #[serde(default)]
    gap: Option<String>,
}

/// The agents of the example policies, as the corpus names them.
fn agents() -> Vec<(&'static str, Actor)> {
    vec![
        (
            "analyst",
            Actor {
                name: "analyst".into(),
                groups: vec!["analysts".into()],
                ..Default::default()
            },
        ),
        (
            "support",
            Actor {
                name: "support".into(),
                groups: vec![],
                ..Default::default()
            },
        ),
        (
            "migrator",
            Actor {
                name: "migrator".into(),
                groups: vec![],
                ..Default::default()
            },
        ),
    ]
}

fn target() -> Target {
    Target {
        name: "shop".into(),
        kind: "postgres".into(),
        tags: BTreeMap::from([("env".into(), "staging".into())]),
    }
}

fn example_policies() -> PolicySet {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(POLICIES)
        .unwrap_or_else(|e| panic!("reading {POLICIES}: {e}"))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no .cedar files in {POLICIES}");
    PolicySet::load_files(&paths).unwrap_or_else(|e| panic!("loading the example policies: {e}"))
}

fn load_corpus() -> (Vec<Case>, Vec<usize>) {
    let text = std::fs::read_to_string(CORPUS).unwrap_or_else(|e| panic!("reading {CORPUS}: {e}"));
    let corpus: Corpus = toml::from_str(&text).unwrap_or_else(|e| panic!("parsing {CORPUS}: {e}"));
    // The line of each `[[case]]` header, to point at the case in the file.
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[case]]")
        .map(|(i, _)| i + 1)
        .collect();
    (corpus.case, lines)
}

fn verdict(name: &str) -> Option<Verdict> {
    [Verdict::Allow, Verdict::Review, Verdict::Deny]
        .into_iter()
        .find(|v| v.name() == name)
}

fn list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.into_iter().collect();
    format!("[{}]", items.join(", "))
}

/// One case's mismatches: (field, expected, got).
type Mismatches = Vec<(String, String, String)>;

fn check_case(policies: &PolicySet, case: &Case) -> Mismatches {
    let mut out: Mismatches = Vec::new();

    // The corpus itself: known class names in Action order, known verdicts.
    let mut expected_classes = Vec::new();
    for name in &case.classes {
        match Action::from_name(name) {
            Some(a) => expected_classes.push(a),
            None => out.push((
                "corpus".into(),
                "a class name".into(),
                format!("{name:?} is not one"),
            )),
        }
    }
    if expected_classes.windows(2).any(|w| w[0] >= w[1]) {
        out.push((
            "corpus".into(),
            "classes in Action order, each once".into(),
            list(case.classes.iter().map(String::as_str)),
        ));
    }

    let c = classify(&case.sql);

    let expected: BTreeSet<Action> = expected_classes.iter().copied().collect();
    if expected != c.actions {
        out.push((
            "classes".into(),
            list(expected.iter().map(|a| a.name())),
            list(c.actions.iter().map(|a| a.name())),
        ));
    }
    for (field, want, got) in [
        ("reads", &case.reads, &c.reads),
        ("writes", &case.writes, &c.writes),
    ] {
        let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        let got_set: BTreeSet<&str> = got.iter().map(String::as_str).collect();
        if want != got_set {
            out.push((field.into(), list(want), list(got_set)));
        }
    }

    let target = target();
    for (who, actor) in agents() {
        let want = match who {
            "analyst" => &case.analyst,
            "support" => &case.support,
            _ => &case.migrator,
        };
        let Some(want_verdict) = verdict(want) else {
            out.push((
                "corpus".into(),
                format!("{who}: allow, review or deny"),
                format!("{want:?}"),
            ));
            continue;
        };
        let d = policies.decide(&Request {
            actor: &actor,
            target: &target,
            classification: &c,
            text: &case.sql,
            justification: None,
            now: 1_700_000_000,
        });
        if d.verdict != want_verdict {
            out.push((
                who.into(),
                want_verdict.name().into(),
                format!("{} ({})", d.verdict.name(), d.reason),
            ));
        }
    }
    out
}

#[test]
fn corpus_matches_classifier_and_example_policies() {
    let policies = example_policies();
    let (cases, lines) = load_corpus();

    let mut report = String::new();
    let mut failing = 0;

    // The corpus must be big enough and cover every class.
    if cases.len() < MIN_CASES {
        let _ = writeln!(
            report,
            "the corpus has {} cases; at least {MIN_CASES} are required",
            cases.len()
        );
    }
    for a in Action::ALL {
        if !cases
            .iter()
            .any(|c| c.classes.iter().any(|n| n == a.name()))
        {
            let _ = writeln!(report, "no case of class {}", a.name());
        }
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        if let Some(first) = seen.insert(&case.sql, i + 1) {
            let _ = writeln!(
                report,
                "cases {first} and {} have the same sql {:?}",
                i + 1,
                case.sql
            );
        }
    }

    let mut gaps = String::new();
    for (i, case) in cases.iter().enumerate() {
        let mismatches = check_case(&policies, case);
        if let Some(gap) = &case.gap {
            if mismatches.is_empty() {
                let _ = writeln!(
                    report,
                    "\ncase {} {:?} is marked as a known gap ({gap}) but now matches: remove `gap`",
                    i + 1,
                    case.sql
                );
                failing += 1;
            } else {
                let _ = writeln!(gaps, "known gap: {:?}: {gap}", case.sql);
            }
            continue;
        }
        if mismatches.is_empty() {
            continue;
        }
        failing += 1;
        let line = lines
            .get(i)
            .map(|l| format!("corpus.toml:{l}"))
            .unwrap_or_else(|| "corpus.toml".into());
        let _ = writeln!(report, "\ncase {} ({line}): {:?}", i + 1, case.sql);
        if let Some(why) = &case.why {
            let _ = writeln!(report, "    why: {why}");
        }
        for (field, expected, got) in mismatches {
            let _ = writeln!(
                report,
                "    {field:<9} expected {expected}\n    {:<9}      got {got}",
                ""
            );
        }
    }

    eprint!("{gaps}");
    if !report.is_empty() {
        panic!(
            "{failing} of {} corpus cases mismatch:\n{report}",
            cases.len()
        );
    }
}
