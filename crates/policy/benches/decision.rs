//! Decision latency: parse + classify + Cedar.
//!
//! * cold: a statement text never seen before (a counter in a trailing comment makes every
//!   text new), so it is parsed, classified and evaluated by Cedar; the per-agent policy
//!   subsets and the entities of already-seen tables are warm, as in a running gateway.
//! * cached: a repeated statement: classification and decision come from the caches.
//!
//! Policies: every file in `examples/policies`, agent "analyst" in group "analysts".
//!
//!     cargo bench -p portcullis-policy --bench decision

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use portcullis_policy::cache::ClassificationCache;
use portcullis_policy::sql::classify;
use portcullis_policy::{Actor, PolicySet, Request, Target};
use std::collections::BTreeMap;
use std::hint::black_box;

const STATEMENTS: &[(&str, &str)] = &[
    ("point-select", "SELECT abalance FROM pgbench_accounts WHERE aid = $1"),
    ("join", "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at > now() - interval '1 day' ORDER BY o.total DESC LIMIT 20"),
    ("update", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"),
    ("insert", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)"),
    ("begin", "BEGIN"),
];

fn policies() -> PolicySet {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("examples/policies")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    paths.sort();
    PolicySet::load_files(&paths).expect("example policies load")
}

fn bench(c: &mut Criterion) {
    let set = policies();
    let actor = Actor {
        name: "analyst".into(),
        groups: vec!["analysts".into()],
        ..Default::default()
    };
    let target = Target {
        name: "shop".into(),
        kind: "postgres".into(),
        tags: BTreeMap::from([("env".into(), "prod".into())]),
    };
    let now = 1_790_000_000;

    let mut g = c.benchmark_group("decision/cold");
    for (name, sql) in STATEMENTS {
        let mut i = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(name), sql, |b, sql| {
            b.iter(|| {
                i += 1;
                let text = format!("{sql} -- {i}");
                let cl = classify(black_box(&text));
                black_box(set.decide(&Request {
                    actor: &actor,
                    target: &target,
                    classification: &cl,
                    text: &text,
                    justification: None,
                    now,
                }))
            })
        });
    }
    g.finish();

    let cache = ClassificationCache::default();
    let mut g = c.benchmark_group("decision/cached");
    for (name, sql) in STATEMENTS {
        cache.classify(sql);
        g.bench_with_input(BenchmarkId::from_parameter(name), sql, |b, sql| {
            b.iter(|| {
                let cl = cache.classify(black_box(sql));
                black_box(set.decide(&Request {
                    actor: &actor,
                    target: &target,
                    classification: &cl,
                    text: sql,
                    justification: None,
                    now,
                }))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("classify");
    for (name, sql) in STATEMENTS {
        g.bench_with_input(BenchmarkId::from_parameter(name), sql, |b, sql| {
            b.iter(|| classify(black_box(sql)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
