//! Crash safety: a gateway killed with SIGKILL loses no event it acknowledged.
//!
//! The test re-runs its own binary as a child process (selected by an environment variable)
//! that appends from several tasks and prints every acknowledged seq; the parent kills it in
//! the middle of the work, then checks the file.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use portcullis_core::config::Durability;
use portcullis_ledger::LedgerReader;

const CHILD_ENV: &str = "PORTCULLIS_LEDGER_CRASH_CHILD";
const MODE_ENV: &str = "PORTCULLIS_LEDGER_CRASH_MODE";
const TASKS: usize = 4;

/// The child: appends until killed. A no-op when run as an ordinary test.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let durability = match std::env::var(MODE_ENV).as_deref() {
        Ok("strict") => Durability::Strict,
        _ => Durability::Default,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let ledger = open(path.as_ref(), durability);
        let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let ledger = ledger.clone();
            let out = out.clone();
            tasks.push(tokio::spawn(async move {
                for call in 0u64.. {
                    let len = 1 + (call % 3) as usize;
                    let events = (0..len)
                        .map(|k| statement(&format!("task-{t}"), &format!("t{t}-c{call}-e{k}")))
                        .collect();
                    let first = ledger.append(events).await.expect("append");
                    // Only now is the call acknowledged: report it.
                    let mut out = out.lock().unwrap();
                    writeln!(out, "ACK {first} {len} {t} {call}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

struct Ack {
    first: u64,
    len: u64,
    task: usize,
    call: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    let mut next = || parts.next()?.parse::<u64>().ok();
    Some(Ack {
        first: next()?,
        len: next()?,
        task: next()? as usize,
        call: next()?,
    })
}

fn kill_mid_flight(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, &path)
        .env(MODE_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut acked_events = 0;
    // Kill once a good number of events is acknowledged, while appends are still in flight.
    while acked_events < 3000 {
        assert!(Instant::now() < deadline, "child too slow");
        let line = lines
            .next()
            .expect("child exited early")
            .expect("read child output");
        if let Some(ack) = parse_ack(&line) {
            acked_events += ack.len;
            acks.push(ack);
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed");
    // Acknowledgements printed before the kill, still in the pipe.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(ack) = parse_ack(&line) {
            acks.push(ack);
        }
    }

    // The reader opens the file as left by the crash (SQLite recovers the WAL).
    let reader = LedgerReader::open(&path).unwrap();
    let max_acked = acks.iter().map(|a| a.first + a.len - 1).max().unwrap();
    let stored = match reader.verify(|_| {}).unwrap() {
        portcullis_ledger::VerifyReport::Verified { events, .. } => events,
        other => panic!("ledger broken after a crash: {other:?}"),
    };
    assert!(
        stored >= max_acked,
        "acknowledged up to seq {max_acked}, only {stored} events survived"
    );
    for ack in &acks {
        let rows = reader.after(ack.first - 1, ack.len as usize).unwrap();
        assert_eq!(
            rows.len() as u64,
            ack.len,
            "acknowledged call at {}",
            ack.first
        );
        for (k, row) in rows.iter().enumerate() {
            assert_eq!(row.seq, ack.first + k as u64);
            assert_eq!(
                marker(row),
                format!("t{}-c{}-e{k}", ack.task, ack.call),
                "seq {}",
                row.seq
            );
        }
    }
    drop(reader);

    // The gateway restarts on the same file and continues the chain.
    let ledger = open(&path, Durability::Default);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let next = rt
        .block_on(ledger.append(vec![statement("after", "restart")]))
        .unwrap();
    assert_eq!(next, stored + 1);
    ledger.close();
    assert_verified(&path, stored + 1);
}

#[test]
fn sigkill_loses_no_acknowledged_event_default_durability() {
    kill_mid_flight("default");
}

#[test]
fn sigkill_loses_no_acknowledged_event_strict_durability() {
    kill_mid_flight("strict");
}
