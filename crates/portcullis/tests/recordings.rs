//! Session recordings end to end: psql through the real gateway with `recording = "full"` or
//! `"commands"`; `portcullis sessions list|show|replay` read them back from a local folder and
//! from a real S3-compatible server (moto, started by the test); a chunk altered in the store
//! is refused on replay.

mod common;

use common::*;

fn session_ids(gw: &Gateway) -> Vec<String> {
    let out = ok(gw.cli(&["sessions", "list"]));
    out.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn run_queries(gw: &Gateway) {
    ok(gw.psql(&[
        "-c",
        "CREATE TABLE rec_people (id int, name text)",
        "-c",
        "INSERT INTO rec_people VALUES (1, 'ada'), (2, NULL)",
        "-c",
        "SELECT id, name FROM rec_people ORDER BY id",
        "-c",
        "SELECT g, repeat('x', 100) FROM generate_series(1, 2000) g",
    ]));
}

#[test]
fn full_and_commands_recordings_replay_from_a_local_folder() {
    let cluster = target(&[]);
    let mut gw = Gateway::start(
        &cluster,
        GatewayOptions {
            connection: "recording = \"full\"".into(),
            extra_config: "\n[recordings]\nchunk_kib = 16\n".into(),
            ..GatewayOptions::default()
        },
    );
    run_queries(&gw);
    gw.stop();

    let ids = session_ids(&gw);
    assert_eq!(ids.len(), 1, "one session: {ids:?}");
    let list = ok(gw.cli(&["sessions", "list"]));
    assert!(list.contains("chunk(s)"), "{list}");
    let replay = ok(gw.cli(&["sessions", "replay", &ids[0][..8]]));
    for want in [
        "> INSERT INTO rec_people VALUES (1, 'ada'), (2, NULL)",
        "> SELECT id, name FROM rec_people ORDER BY id",
        "< id | name",
        "<   1 | ada",
        "<   2 | NULL",
        "< SELECT 2",
        "<   2000 | xxxx",
        "< SELECT 2000",
    ] {
        assert!(
            replay.contains(want),
            "replay lacks {want:?}:\n{}",
            &replay[..replay.len().min(3000)]
        );
    }
    // 2000 rows of ~110 bytes in 16 KiB chunks: the recording spans several chunks, in order.
    let show = ok(gw.cli(&["sessions", "show", &ids[0]]));
    let chunks = show.matches("recording chunk #").count();
    assert!(chunks >= 3, "{chunks} chunks:\n{show}");
    assert!(ok(gw.cli(&["audit", "verify"])).contains("ledger OK"));

    // Alter one stored chunk: replay names it and fails.
    let folder = gw.dir.path().join("data/recordings/chunks");
    let victim = walk(&folder).into_iter().next().expect("a stored chunk");
    std::fs::write(&victim, b"not the recorded bytes").unwrap();
    let out = gw.cli(&["sessions", "replay", &ids[0]]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("was altered"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("recording INCOMPLETE"),
        "{}",
        stdout(&out)
    );

    // `commands`: what the target received, no rows.
    let mut gw2 = Gateway::start(
        &cluster,
        GatewayOptions {
            connection: "recording = \"commands\"".into(),
            ..GatewayOptions::default()
        },
    );
    ok(gw2.psql(&["-c", "SELECT id, name FROM rec_people ORDER BY id"]));
    gw2.stop();
    let id = session_ids(&gw2).pop().expect("a session");
    let replay = ok(gw2.cli(&["sessions", "replay", &id]));
    assert!(
        replay.contains("> SELECT id, name FROM rec_people ORDER BY id"),
        "{replay}"
    );
    assert!(
        !replay.contains("ada"),
        "commands mode recorded rows:\n{replay}"
    );

    // `off` (the default): no recording, and replay says how to turn it on.
    let mut gw3 = Gateway::start(&cluster, GatewayOptions::default());
    ok(gw3.psql(&["-c", "SELECT 1"]));
    gw3.stop();
    let id = session_ids(&gw3).pop().expect("a session");
    let out = gw3.cli(&["sessions", "replay", &id]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("recording = \"commands\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn recordings_go_to_an_s3_bucket() {
    let s3 = moto();
    let bucket = s3.bucket("recordings");
    let cluster = target(&[]);
    let mut gw = Gateway::start(
        &cluster,
        GatewayOptions {
            connection: "recording = \"full\"".into(),
            extra_config: format!("\n[recordings]\nstore = \"s3\"\nchunk_kib = 16\n{bucket}"),
            ..GatewayOptions::default()
        },
    );
    run_queries(&gw);
    gw.stop();
    let keys = s3.keys("recordings");
    assert!(keys.len() >= 3, "{keys:?}");
    assert!(
        keys.iter().all(|k| k.starts_with("gw1/chunks/")),
        "{keys:?}"
    );
    let id = session_ids(&gw).pop().expect("a session");
    let replay = ok(gw.cli(&["sessions", "replay", &id]));
    assert!(replay.contains("<   1 | ada"), "{replay}");
    assert!(replay.contains("< SELECT 2000"), "{replay}");
    // Replace one object in the bucket: replay refuses it.
    let victim = keys[0].clone();
    boto(
        s3.port,
        &format!("s3.put_object(Bucket='recordings', Key='{victim}', Body=b'forged')"),
    );
    let out = gw.cli(&["sessions", "replay", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("was altered"), "{}", stdout(&out));
}

/// Retention covers recordings too: chunks of a connection and day past `max_age_days` are
/// deleted from the store, the deletion is a ledger event, today's chunks stay and the ledger
/// still verifies. (The old chunk is dated two months back: the fake clock.)
#[test]
fn retention_deletes_old_recording_chunks() {
    let cluster = target(&[]);
    let mut gw = Gateway::start(
        &cluster,
        GatewayOptions {
            connection: "recording = \"full\"".into(),
            extra_config: format!(
                "\n[[retention.rules]]\nname = \"rec-30\"\nconnections = [\"{DB}\"]\nmax_age_days = 30\n"
            ),
            ..GatewayOptions::default()
        },
    );
    ok(gw.psql(&["-c", "SELECT 'kept-today'"]));
    gw.stop();
    let folder = gw.dir.path().join("data/recordings");
    let today = walk(&folder.join("chunks"));
    assert!(!today.is_empty());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = portcullis_ledger::recording::BlobStore::local(&folder).unwrap();
    let old_hash = rt
        .block_on(store.put(b"an old recording chunk".to_vec()))
        .unwrap();
    let ledger =
        portcullis_ledger::Ledger::open(portcullis_ledger::LedgerOptions::new(gw.ledger_path()))
            .unwrap();
    rt.block_on(ledger.append(vec![portcullis_core::NewEvent {
        ts_us: portcullis_core::now_us() - 60 * 86_400_000_000,
        session_id: "old-session".into(),
        data: portcullis_core::EventData::RecordingChunk {
            connection: DB.into(),
            index: 0,
            hash: old_hash.clone(),
            bytes: 22,
            raw_bytes: 22,
            frames: 1,
            first_us: 0,
            last_us: 0,
            error: None,
        },
    }]))
    .unwrap();
    ledger.close();

    let dry = ok(gw.cli(&["retention", "run", "--dry-run"]));
    assert!(dry.contains("(recordings)"), "{dry}");
    let run = ok(gw.cli(&["retention", "run"]));
    assert!(run.contains("deleted 1 segment(s)"), "{run}");
    let old_file = folder.join("chunks").join(&old_hash[..2]).join(&old_hash);
    assert!(!old_file.exists(), "the old chunk is still stored");
    for f in &today {
        assert!(f.exists(), "today's chunk {} was deleted", f.display());
    }
    let tail = ok(gw.cli(&["audit", "tail", "-n", "50"]));
    assert!(
        tail.contains("RETENTION deleted the recording chunks of app/"),
        "{tail}"
    );
    assert!(ok(gw.cli(&["audit", "verify"])).contains("ledger OK"));
    // Today's session still replays.
    let id = session_ids(&gw).pop().unwrap();
    assert!(ok(gw.cli(&["sessions", "replay", &id])).contains("kept-today"));
}
