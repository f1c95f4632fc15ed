//! Masking end to end: the demo's `customers` table through the real gateway with masking on,
//! against the same table read directly. Every non-sensitive value must be identical, every
//! sensitive one masked, and psql, psycopg (text and binary) and asyncpg must parse every row.
//! The ledger (opened, and its raw files) and the session recording must hold no raw value.
//! Plus: a million-row result streams with flat gateway memory, a very wide row, COPY, error
//! details, and who may see raw data.

mod common;

#[allow(dead_code)]
#[path = "../src/demo/seed.rs"]
mod seed;

use common::*;
use std::collections::BTreeMap;

const CUSTOMERS: usize = 400;

/// The demo's masking profile (as `portcullis demo` writes it) plus a raw-data profile for
/// one explicitly assigned agent.
fn masking_config(dba_hash: &str) -> String {
    format!(
        r#"
[[agents]]
name = "dba-agent"
key_hash = "{dba_hash}"
groups = ["dba"]

{masking}
[[masking.assign]]
profile = "unmasked"
groups = ["dba"]
"#,
        masking = seed::DEMO_MASKING
    )
}

fn seeded_target() -> pg_ephemeral::Cluster {
    let cluster = target(&[]);
    let sql = seed::seed_sql(CUSTOMERS, 0, 42);
    let f = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(f.path(), sql).expect("write seed");
    ok(psql_direct(
        &cluster,
        &["-f", &f.path().display().to_string()],
    ));
    cluster
}

const COLUMNS: &str =
    "id, full_name, email, phone, card_number, iban, national_id, national_id_kind, city";

/// Rows of `psql -A -t` output with `\x1f` as field separator and NULL shown as `<null>`.
fn rows(out: &str) -> Vec<Vec<Option<String>>> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split('\x1f')
                .map(|v| (v != "<null>").then(|| v.to_string()))
                .collect()
        })
        .collect()
}

fn select_args(sql: &str) -> Vec<String> {
    vec![
        "-F".into(),
        "\x1f".into(),
        "-P".into(),
        "null=<null>".into(),
        "-c".into(),
        sql.into(),
    ]
}

fn is_partial_card(masked: &str, raw: &str) -> bool {
    let m: Vec<char> = masked
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '*')
        .collect();
    let r: Vec<char> = raw.chars().filter(|c| c.is_ascii_digit()).collect();
    m.len() == r.len()
        && m[..6] == r[..6]
        && m[m.len() - 4..] == r[r.len() - 4..]
        && m[6..m.len() - 4].iter().all(|&c| c == '*')
}

#[test]
fn customers_are_masked_and_everything_else_is_identical() {
    let cluster = seeded_target();
    let dba = agent("dba-agent");
    let mut gw = Gateway::start(
        &cluster,
        GatewayOptions {
            connection: "recording = \"full\"".into(),
            extra_config: masking_config(&dba.key_hash),
            ..GatewayOptions::default()
        },
    );
    let sql = format!("SELECT {COLUMNS} FROM customers ORDER BY id");
    let args = select_args(&sql);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let direct = rows(&stdout(&psql_direct(&cluster, &args)));
    let masked = rows(&ok(gw.psql(&args)));
    assert_eq!(direct.len(), CUSTOMERS);
    assert_eq!(masked.len(), CUSTOMERS);

    let mut raw_values: Vec<String> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut seen = BTreeMap::<&str, usize>::new();
    for (d, m) in direct.iter().zip(&masked) {
        let [id, name, email, phone, card, iban, nid, kind, city] = &d[..] else {
            panic!("9 columns: {d:?}")
        };
        assert_eq!(&m[0], id, "ids are identical");
        assert_eq!(&m[7], kind, "national_id_kind is not sensitive");
        assert_eq!(&m[8], city, "city is not sensitive");
        assert_eq!(m[1].as_deref(), Some("[REDACTED]"), "full_name column rule");
        let (e, me) = (
            email.as_ref().expect("email"),
            m[2].as_ref().expect("email"),
        );
        assert!(
            me.starts_with(&e[..1])
                && me.contains("***@")
                && e.ends_with(&me[me.find('@').expect("@")..]),
            "{e} → {me}"
        );
        if let Some(p) = phone {
            let mp = m[3].as_ref().expect("phone stays non-null");
            assert!(
                mp.ends_with(&p[p.len() - 4..]) && mp.contains('*') && mp.len() == p.len(),
                "{p} → {mp}"
            );
            raw_values.push(p.clone());
            *seen.entry("phone").or_default() += 1;
        }
        if let Some(c) = card {
            let mc = m[4].as_ref().expect("card stays non-null");
            assert!(is_partial_card(mc, c), "{c} → {mc}");
            raw_values.push(c.clone());
            *seen.entry("card").or_default() += 1;
        }
        if let Some(i) = iban {
            assert_eq!(m[5].as_deref(), Some("[IBAN]"), "{i}");
            raw_values.push(i.clone());
            *seen.entry("iban").or_default() += 1;
        }
        if let Some(n) = nid {
            // Redacted whole, labelled with the entity a detector recognises in it.
            let mn = m[6].as_deref().expect("stays non-null");
            assert!(
                mn.starts_with('[') && mn.ends_with(']') && !mn.contains(n.as_str()),
                "{n} → {mn}"
            );
            raw_values.push(n.clone());
            *seen.entry("national_id").or_default() += 1;
        }
        raw_values.push(e.clone());
        names.push(name.clone().expect("name"));
    }
    for (what, n) in &seen {
        assert!(
            *n > CUSTOMERS / 10,
            "the demo data has {what} values: {seen:?}"
        );
    }

    // Every driver and format parses every row and sees the same masked values as psql.
    let out = python_client("masked-rows", &gw.url(DB), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    for driver in ["psycopg_text", "psycopg_binary", "asyncpg"] {
        let got: Vec<Vec<Option<String>>> =
            serde_json::from_value(v[driver].clone()).expect("rows");
        assert_eq!(got, masked, "{driver} sees what psql sees");
    }
    assert_eq!(
        v["asyncpg_timestamps"], CUSTOMERS,
        "binary timestamps untouched"
    );
    for (e, row) in v["jsonb_emails"]
        .as_array()
        .expect("list")
        .iter()
        .zip(&masked)
    {
        assert_eq!(
            e.as_str(),
            row[2].as_deref(),
            "emails inside binary jsonb are masked too"
        );
    }
    for (key, col) in [("jsonb_names", 1), ("jsonb_phones", 3)] {
        let got: Vec<Option<String>> = serde_json::from_value(v[key].clone()).expect("list");
        let want: Vec<Option<String>> = masked.iter().map(|r| r[col].clone()).collect();
        assert_eq!(got, want, "{key}: column rules apply inside jsonb");
    }

    // Literals and parameters carrying personal data, and an error quoting one.
    let card = direct[0][4]
        .clone()
        .or(direct[1][4].clone())
        .expect("a card");
    let email = direct[0][2].clone().expect("an email");
    ok(gw.psql(&[
        "-c",
        &format!("SELECT count(*) FROM customers WHERE email = '{email}'"),
    ]));
    // Terse: psql would otherwise echo the statement it sent (its own copy) under the error.
    let err = gw.psql(&[
        "-v",
        "VERBOSITY=terse",
        "-c",
        &format!("SELECT '{email}'::int"),
    ]);
    assert!(!err.status.success());
    let err_text = stderr(&err);
    assert!(
        !err_text.contains(&email),
        "the error the client sees is masked: {err_text}"
    );
    assert!(
        err_text.contains("[EMAIL]") || err_text.contains("***@"),
        "{err_text}"
    );
    let out = python_client("psycopg-param", &gw.url(DB), &[&card]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Renaming or computing a ruled column does not take it out of its rule.
    for sql in [
        "SELECT full_name AS who FROM customers ORDER BY id",
        "SELECT upper(full_name) FROM customers ORDER BY id",
        "SELECT who FROM (SELECT id, full_name::text AS who FROM customers) c ORDER BY id",
        "WITH c(who) AS (SELECT full_name FROM customers) SELECT who || '' FROM c",
        // A whole row in record syntax holds the name.
        "SELECT c FROM customers c ORDER BY id",
    ] {
        let args = select_args(sql);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = rows(&ok(gw.psql(&args)));
        assert_eq!(got.len(), CUSTOMERS, "{sql}");
        assert!(
            got.iter().all(|r| r[0].as_deref() == Some("[REDACTED]")),
            "{sql}: {:?}",
            &got[..2]
        );
    }

    // Nor does running it as a prepared statement: `EXECUTE` is not traced, so every column
    // of the customers table's result takes its strictest rule.
    let prepared = rows(&ok(gw.psql(&[
        "-F",
        "\x1f",
        "-c",
        "PREPARE named AS SELECT full_name AS who FROM customers ORDER BY id",
        "-c",
        "EXECUTE named",
    ])));
    assert_eq!(prepared.len(), CUSTOMERS);
    assert!(
        prepared
            .iter()
            .all(|r| r[0].as_deref() == Some("[REDACTED]")),
        "EXECUTE: {:?}",
        &prepared[..2]
    );

    // The raw-data profile: only through the explicit assignment, and recorded as such.
    let raw = gw.psql_as("dba-agent", &dba.key, DB, "prefer", &args);
    let raw = rows(&stdout(&raw));
    assert_eq!(raw, direct, "the dba profile sees raw data");
    gw.stop();

    let opens: Vec<serde_json::Value> = gw
        .events_of("session_open")
        .iter()
        .map(|e| serde_json::from_str(e.json()).expect("json"))
        .collect();
    let profiles: Vec<(String, bool)> = opens
        .iter()
        .map(|o| {
            let m = &o["masking"];
            (
                m["profile"].as_str().unwrap_or("").to_string(),
                m["unmasked"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert!(
        profiles.contains(&("analyst".into(), false)),
        "{profiles:?}"
    );
    assert!(
        profiles.contains(&("unmasked".into(), true)),
        "{profiles:?}"
    );

    // Counts per entity in the result event of the big select.
    let results: Vec<serde_json::Value> = gw
        .events_of("result")
        .iter()
        .map(|e| serde_json::from_str(e.json()).expect("json"))
        .collect();
    let counted = results
        .iter()
        .find(|r| r["rows"] == CUSTOMERS && r["masked"].is_object())
        .expect("a result with masking counts");
    assert_eq!(counted["masked"]["EMAIL"], CUSTOMERS, "{counted}");
    assert!(
        counted["masked"]["COLUMN"].as_u64().unwrap_or(0) >= CUSTOMERS as u64,
        "{counted}"
    );

    // Nothing raw in what the ledger holds, opened or as files, nor in the recording.
    let tail = ok(gw.cli(&["audit", "tail", "-n", "100000", "--json"]));
    assert!(tail.contains("[EMAIL]"), "literals are masked, not dropped");
    let mut files = Vec::new();
    for entry in walk(&gw.dir.path().join("data")) {
        files.push(std::fs::read(&entry).unwrap_or_default());
    }
    let ids = ok(gw.cli(&["sessions", "list"]));
    let mut replays = String::new();
    for id in ids
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
    {
        replays.push_str(&stdout(&gw.cli(&["sessions", "replay", id])));
    }
    assert!(
        replays.contains("SELECT id, full_name"),
        "the recording was replayed"
    );
    assert!(
        replays.contains("[REDACTED]"),
        "the recording holds rows as masked"
    );
    for raw in raw_values.iter().chain([&card, &email]).chain(&names) {
        assert!(!tail.contains(raw.as_str()), "ledger holds raw {raw:?}");
        // Also inside the `to_jsonb(c)` documents of the masked-rows client: column rules
        // reach values under their column's key.
        assert!(
            !replays.contains(raw.as_str()),
            "recording holds raw {raw:?}"
        );
        for f in &files {
            assert!(
                !f.windows(raw.len()).any(|w| w == raw.as_bytes()),
                "a ledger or recording file holds raw {raw:?}"
            );
        }
    }
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_million_masked_rows_stream_with_flat_memory_and_wide_rows_survive() {
    let cluster = target(&[]);
    let mut gw = Gateway::start(&cluster, GatewayOptions::default());
    // Warm up, then measure the gateway's peak memory across a million masked rows (about
    // 250 MB of values): buffering the result would show as hundreds of MB.
    ok(gw.psql(&[
        "-c",
        "SELECT 'warm-up user@example.com' FROM generate_series(1, 10000)",
    ]));
    let before = peak_rss_kib(gw.pid());
    let out = gw.psql(&[
        "-o",
        "/dev/null",
        "-c",
        "SELECT g, 'user' || g || '@example.com', repeat('x', 200) FROM generate_series(1, 1000000) g",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = peak_rss_kib(gw.pid());
    println!("gateway peak RSS: {before} KiB before, {after} KiB after 1M masked rows");
    assert!(
        after < before + 64 * 1024,
        "the gateway's peak memory grew from {before} KiB to {after} KiB over one result set"
    );

    // A 32 MiB value with an email at each end: masked, framed right, nothing lost between.
    let out = ok(gw.psql(&[
        "-c",
        "SELECT length('a@example.com ' || repeat('y', 33554432) || ' z@example.org')",
    ]));
    assert_eq!(out.trim(), "33554460");
    let out = ok(gw.psql(&[
        "-c",
        "SELECT 'a@example.com ' || repeat('y', 33554432) || ' z@example.org'",
    ]));
    let v = out.trim();
    assert_eq!(
        v.len(),
        33554432 + "[EMAIL] ".len() * 2,
        "{}",
        &v[..40.min(v.len())]
    );
    assert!(v.starts_with("[EMAIL] yyyy") && v.ends_with("yyyy [EMAIL]"));
    gw.stop();

    let results: Vec<serde_json::Value> = gw
        .events_of("result")
        .iter()
        .map(|e| serde_json::from_str(e.json()).expect("json"))
        .collect();
    assert!(
        results
            .iter()
            .any(|r| r["rows"] == 1_000_000 && r["masked"]["EMAIL"] == 1_000_000),
        "the million-row result records one EMAIL per row"
    );
}

#[test]
fn copy_out_is_masked_and_binary_copy_is_refused() {
    let cluster = seeded_target();
    let gw = Gateway::start(&cluster, GatewayOptions::default());
    let text = ok(gw.psql(&[
        "-c",
        "COPY (SELECT email, card_number FROM customers ORDER BY id LIMIT 20) TO STDOUT",
    ]));
    let direct = stdout(&psql_direct(
        &cluster,
        &[
            "-c",
            "COPY (SELECT email, card_number FROM customers ORDER BY id LIMIT 20) TO STDOUT",
        ],
    ));
    assert_eq!(text.lines().count(), 20);
    for (m, d) in text.lines().zip(direct.lines()) {
        assert!(m.starts_with("[EMAIL]\t"), "{m} (direct: {d})");
        let raw_card = d.split('\t').nth(1).expect("card");
        if raw_card != "\\N" {
            assert_eq!(m.split('\t').nth(1), Some("[CREDIT_CARD]"), "{d}");
        }
    }
    let bin = gw.psql(&["-c", "COPY customers TO STDOUT (FORMAT binary)"]);
    assert!(!bin.status.success());
    assert!(
        stderr(&bin).contains("binary COPY output cannot be masked"),
        "{}",
        stderr(&bin)
    );
}

#[test]
fn raw_access_needs_an_explicit_assignment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = "[[listeners]]\nname = \"pg\"\nprotocol = \"postgres\"\nbind = \"127.0.0.1:1\"\n\n\
                [[connections]]\nname = \"db\"\ntype = \"postgres\"\nhost = \"h\"\ndatabase = \"d\"\nuser = \"u\"\n";
    for (extra, want) in [
        (
            "[masking]\ndefault_profile = \"unmasked\"\n",
            "must come from a [[masking.assign]] rule",
        ),
        (
            "[masking.profiles.p]\nentities = { EMAIL = \"hash\" }\n",
            "hmac_key_env",
        ),
        (
            "[masking.profiles.p]\nentities = { EMALE = \"redact\" }\n",
            "unknown entity \"EMALE\"",
        ),
        (
            "[[masking.custom]]\nentity = \"X\"\npattern = \"([\"\n",
            "entity \"X\": the pattern does not compile",
        ),
        (
            "[masking]\nphone_regions = [\"Narnia\"]\n",
            "unknown region \"Narnia\"",
        ),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("{base}\n{extra}")).expect("write");
        let out = std::process::Command::new(exe())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{extra} must be refused");
        assert!(stderr(&out).contains(want), "{extra}: {}", stderr(&out));
    }
    // A connection cannot name an unmasked profile either.
    let path = dir.path().join("c.toml");
    std::fs::write(&path, format!("{base}masking_profile = \"unmasked\"\n")).expect("write");
    let out = std::process::Command::new(exe())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        stderr(&out).contains("connections.db.masking_profile"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn mask_test_shows_what_would_be_masked() {
    use std::io::Write;
    let run = |args: &[&str], input: &str| {
        let mut child = std::process::Command::new(exe())
            .args(["mask", "test"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
        child.wait_with_output().expect("wait")
    };
    let out = run(
        &[],
        "Zoë paid 4111 1111 1111 1111, mail zoë@example.com\nnothing here\n",
    );
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        "Zoë paid [CREDIT_CARD], mail [EMAIL]\nnothing here\n"
    );
    assert!(
        stderr(&out).contains("CREDIT_CARD=1 EMAIL=1"),
        "{}",
        stderr(&out)
    );

    let out = run(&["--json"], "Zoë paid 4111 1111 1111 1111\n");
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(v["findings"][0]["entity"], "CREDIT_CARD");
    assert_eq!(
        v["findings"][0]["start"], 9,
        "offsets count characters, not bytes"
    );
    assert_eq!(v["findings"][0]["end"], 28);

    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        "[masking.profiles.standard]\ncolumns = { \"customers.full_name\" = \"last4\", \"note\" = \"null\" }\n",
    )
    .expect("write");
    let out = run(
        &[
            "--config",
            &cfg.display().to_string(),
            "--format",
            "csv",
            "--table",
            "customers",
        ],
        "full_name,note,email\nJane Doe,\"x, y\",jane@example.com\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "full_name,note,email\n***e Doe,,[EMAIL]\n");
}
