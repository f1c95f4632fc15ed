//! Signed checkpoints end to end: a real gateway signs them while psql runs statements,
//! `audit verify` checks them (and the mirror), `audit prove` gives a proof that both
//! `audit verify-proof` and an independent Python checker accept, and a deleted tail is
//! caught even when the ledger's own checkpoints are deleted with it.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CHECKPOINTS: &str = r#"
[store.checkpoints]
every_secs = 1
origin = "portcullis-test/ledger"
mirror_dir = "../mirror"
"#;

fn verify_proof_py(proof: &Path, key: &Path) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/tools/verify_proof.py");
    Command::new(python())
        .arg(script)
        .arg(proof)
        .arg(key)
        .output()
        .expect("run verify_proof.py")
}

fn verify_proof_cli(proof: &Path, key: &Path) -> Output {
    Command::new(exe())
        .args(["audit", "verify-proof"])
        .arg(proof)
        .arg("--key")
        .arg(key)
        .output()
        .expect("run portcullis")
}

#[test]
fn checkpoints_are_signed_mirrored_proved_and_catch_a_deleted_tail() {
    let cluster = target(&[]);
    let mut gw = Gateway::start(
        &cluster,
        GatewayOptions {
            extra_config: CHECKPOINTS.into(),
            ..GatewayOptions::default()
        },
    );
    for i in 0..6 {
        ok(gw.psql(&["-c", &format!("SELECT {i} AS checkpointed")]));
    }
    gw.stop(); // signs the tail
    let dir = gw.dir.path().to_path_buf();
    let pub_key = dir.join("data/keys/ledger-checkpoint.key");
    let vkey_file = PathBuf::from(format!("{}.pub", pub_key.display()));
    let vkey = std::fs::read_to_string(&vkey_file).expect("the verifier key is written");
    assert!(vkey.starts_with("portcullis-test/ledger+"), "{vkey}");
    let mirror = dir.join("mirror/checkpoint");
    assert!(mirror.is_file(), "the mirror receives checkpoints");

    let total = gw.events().len() as u64;
    let report = ok(gw.cli(&["audit", "verify"]));
    assert!(
        report.contains(&format!("{total} events verified")),
        "{report}"
    );
    assert!(report.contains("signed checkpoint(s) match"), "{report}");
    assert!(
        report.contains(&format!("the latest covers {total} events")),
        "{report}"
    );
    assert!(
        report.contains("signatures checked with portcullis-test/ledger+"),
        "{report}"
    );

    // An auditor keeps the latest checkpoint.
    let note = ok(gw.cli(&["audit", "checkpoint"]));
    assert!(
        note.starts_with(&format!("portcullis-test/ledger\n{total}\n")),
        "{note}"
    );
    let auditor_copy = dir.join("auditor-checkpoint.txt");
    std::fs::write(&auditor_copy, &note).expect("write");
    let listed = ok(gw.cli(&["audit", "checkpoint", "--list"]));
    assert!(listed.lines().count() >= 1, "{listed}");

    // Prove one statement; the proof checks out in Rust and in the independent Python.
    let seq = gw.events_of("statement")[3].seq;
    let proof = ok(gw.cli(&["audit", "prove", &seq.to_string()]));
    let proof_file = dir.join("proof.json");
    std::fs::write(&proof_file, &proof).expect("write proof");
    let checked = ok(verify_proof_cli(&proof_file, &vkey_file));
    assert!(
        checked.contains(&format!("proof OK: event #{seq} (statement)")),
        "{checked}"
    );
    let py = ok(verify_proof_py(&proof_file, &vkey_file));
    assert!(
        py.starts_with(&format!("OK event {seq} in portcullis-test/ledger")),
        "{py}"
    );

    // A proof whose event was changed fails both checkers.
    let forged = proof.replacen(r#"\"verdict\":\"allow\""#, r#"\"verdict\":\"deny\""#, 1);
    assert_ne!(forged, proof);
    let forged_file = dir.join("forged.json");
    std::fs::write(&forged_file, &forged).expect("write");
    let o = verify_proof_cli(&forged_file, &vkey_file);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("proof FAILED"), "{}", stdout(&o));
    let o = verify_proof_py(&forged_file, &vkey_file);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    // So does a checkpoint signed by another key under the same name.
    let other = "portcullis-test/ledger+00000000+AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let o = verify_proof_py(&proof_file, Path::new(other));
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));

    // Delete the last three events and every checkpoint in the ledger: the chain alone
    // would pass, the mirror does not.
    {
        let db = rusqlite::Connection::open(gw.ledger_path()).expect("open");
        db.execute_batch(&format!(
            "DELETE FROM events WHERE seq > {}; DELETE FROM checkpoints;",
            total - 3
        ))
        .expect("tamper");
    }
    let o = gw.cli(&["audit", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(
        text.contains(&format!("FAILED at event #{}: truncated", total - 2)),
        "{text}"
    );
    assert!(text.contains("mirror"), "names the mirror: {text}");
    // With only the ledger file and the auditor's copy (no configuration, no mirror).
    let o = Command::new(exe())
        .args(["audit", "verify", "--ledger"])
        .arg(gw.ledger_path())
        .arg("--key")
        .arg(vkey.trim())
        .arg("--checkpoint")
        .arg(&auditor_copy)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("truncated"), "{}", stdout(&o));

    // The gateway refuses to write on top of the cut.
    let o = Command::new(exe())
        .args(["serve", "--config"])
        .arg(&gw.config)
        .output()
        .expect("run serve");
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "has {} events but its signed checkpoint covers {total}",
            total - 3
        )),
        "{err}"
    );
}

/// `[store.checkpoints.mirror_s3]`: every checkpoint goes to an S3-compatible bucket (moto,
/// started here) as `checkpoint` and, written once, `checkpoints/<size>`; `audit verify`
/// compares the ledger with it, and a forged mirror is caught by verify and refused at start.
#[test]
fn checkpoints_are_mirrored_to_an_s3_bucket() {
    let s3 = moto();
    let bucket = s3.bucket("evidence");
    let cluster = target(&[]);
    let mut gw = Gateway::start(
        &cluster,
        GatewayOptions {
            store: format!(
                "[store.checkpoints]\nevery_secs = 1\n[store.checkpoints.mirror_s3]\n{bucket}"
            ),
            ..GatewayOptions::default()
        },
    );
    ok(gw.psql(&["-c", "SELECT 1"]));
    gw.stop();
    let keys = s3.keys("evidence");
    assert!(keys.iter().any(|k| k == "gw1/checkpoint"), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.starts_with("gw1/checkpoints/0000")),
        "{keys:?}"
    );
    let verify = ok(gw.cli(&["audit", "verify"]));
    assert!(verify.contains("ledger OK"), "{verify}");
    // Replace the mirrored note with one this key did not sign.
    boto(
        s3.port,
        "s3.put_object(Bucket='evidence', Key='gw1/checkpoint', Body=b'forged\\n1\\nAAAA\\n\\n')",
    );
    let out = gw.cli(&["audit", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let start = std::process::Command::new(exe())
        .args(["serve", "--config"])
        .arg(&gw.config)
        .output()
        .expect("run serve");
    assert!(!start.status.success(), "started against a forged mirror");
    assert!(
        stderr(&start).contains("gw1/checkpoint"),
        "{}",
        stderr(&start)
    );
}
