//! What the Merkle tree and checkpoints cost, per event, next to the chain hash every event
//! already pays.
//!
//! ```text
//! cargo bench -p portcullis-ledger --bench tree
//! ```
//!
//! Whole-ledger figures (acknowledged appends with checkpoints on, verification of a million
//! events) come from `cargo run --release -p portcullis-ledger --example append_bench`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portcullis_ledger::chain::{event_hash, GENESIS};
use portcullis_ledger::merkle::{self, event_leaf, Frontier};
use portcullis_ledger::CheckpointSigner;
use std::hint::black_box;

const DATA: &str = r#"{"kind":"statement","principal":{"agent":"etl-agent","auth_method":"scram-sha-256"},"client_addr":"10.1.2.3:50000","connection":"orders-prod","protocol":"postgres","text":"SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 4242","mode":"extended","params":[],"verdict":"allow"}"#;

fn per_event(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("chain_hash", |b| {
        let mut prev = GENESIS;
        let mut seq = 0u64;
        b.iter(|| {
            seq += 1;
            prev = event_hash(&prev, seq, 1_700_000_000_000_000, "statement", "sess", DATA);
            black_box(prev)
        })
    });
    g.bench_function("merkle_leaf_and_frontier_push", |b| {
        let mut f = Frontier::new();
        let h = [7u8; 32];
        b.iter(|| f.push(event_leaf(black_box(&h))))
    });
    g.finish();
}

fn checkpoint_and_proof(c: &mut Criterion) {
    let signer = CheckpointSigner::from_seed("bench/ledger", [1u8; 32]).expect("signer");
    let verifier = signer.verifier();
    c.bench_function("checkpoint/sign", |b| {
        b.iter(|| black_box(signer.sign(black_box(1_000_000), [3u8; 32])))
    });
    let note = signer.sign(1_000_000, [3u8; 32]);
    c.bench_function("checkpoint/verify", |b| {
        b.iter(|| black_box(verifier.open(black_box(&note)).is_ok()))
    });
    let mut g = c.benchmark_group("inclusion_proof");
    for n in [10_000usize, 1_000_000] {
        let leaves: Vec<_> = (0..n as u64)
            .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
            .collect();
        let root = merkle::root(&leaves);
        let proof = merkle::inclusion_proof(n as u64 / 3, &leaves).expect("proof");
        g.bench_with_input(BenchmarkId::new("verify", n), &n, |b, _| {
            b.iter(|| {
                merkle::verify_inclusion(n as u64 / 3, n as u64, &leaves[n / 3], &proof, &root)
            })
        });
        g.sample_size(10);
        g.bench_with_input(BenchmarkId::new("generate_from_leaves", n), &n, |b, _| {
            b.iter(|| black_box(merkle::inclusion_proof(n as u64 / 3, &leaves)))
        });
    }
    g.finish();
}

criterion_group!(benches, per_event, checkpoint_and_proof);
criterion_main!(benches);
