//! `portcullis sessions list|show|replay`: sessions from the ledger, and their recordings from
//! the recordings store (`[recordings]`), checked against the hashes the ledger holds.

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use portcullis_core::config::{Config, RecordingMode, RecordingStoreKind};
use portcullis_core::EventData;
use portcullis_ledger::recording::{decode_chunk, BlobStore, TO_TARGET};
use portcullis_ledger::{LedgerReader, StoredEvent};
use portcullis_proto_postgres::transcript::Transcript;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// Every session in the ledger: when, who, where, how long, statements, recording.
    List {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// Only the last N sessions.
        #[arg(short = 'n', long)]
        last: Option<usize>,
    },
    /// Every ledger event of one session (ID: the whole id or its first characters).
    Show {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        id: String,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The session's recording as a transcript: what the target received (`>`) and, for
    /// `recording = "full"`, what the client received (`<`). Every chunk is checked against
    /// the hash the ledger recorded for it.
    Replay {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        id: String,
        /// Wait between lines as long as the session did (at most 2 s per pause).
        #[arg(long)]
        realtime: bool,
    },
}

/// The recordings store the configuration names, with its chunk size; `None` when no
/// connection records. Fails when the configuration is incomplete.
pub fn store(cfg: &Config, data_dir: &Path) -> anyhow::Result<Option<(BlobStore, usize)>> {
    if cfg
        .connections
        .iter()
        .all(|c| c.recording == RecordingMode::Off)
    {
        return Ok(None);
    }
    open_store(cfg, data_dir).map(|s| Some((s, cfg.recordings.chunk_kib.max(1) as usize * 1024)))
}

/// The recordings store for reading or deleting (retention): as configured, or `None` when
/// nothing was ever recorded (no connection records and no `[recordings]` folder exists).
pub fn recordings_store(cfg: &Config, data_dir: &Path) -> anyhow::Result<Option<BlobStore>> {
    let local_default = cfg.recordings.store == RecordingStoreKind::Local
        && cfg.recordings.path.is_none()
        && !data_dir.join("recordings").exists();
    if local_default
        && cfg
            .connections
            .iter()
            .all(|c| c.recording == RecordingMode::Off)
    {
        return Ok(None);
    }
    open_store(cfg, data_dir).map(Some)
}

fn open_store(cfg: &Config, data_dir: &Path) -> anyhow::Result<BlobStore> {
    let r = &cfg.recordings;
    match r.store {
        RecordingStoreKind::Local => {
            let folder = match &r.path {
                Some(p) if p.is_absolute() => p.clone(),
                Some(p) => data_dir.join(p),
                None => data_dir.join("recordings"),
            };
            BlobStore::local(&folder).map_err(|e| anyhow!("[recordings]: {e}"))
        }
        RecordingStoreKind::S3 => {
            let bucket = r.bucket.clone().ok_or_else(|| {
                anyhow!("[recordings] store = \"s3\" needs bucket = \"…\" (an existing bucket)")
            })?;
            crate::config::s3_store(&portcullis_core::config::S3Config {
                bucket,
                prefix: r.prefix.clone(),
                endpoint: r.endpoint.clone(),
                region: r.region.clone(),
                access_key_id_env: r.access_key_id_env.clone(),
                secret_access_key_env: r.secret_access_key_env.clone(),
                allow_http: r.allow_http,
            })
            .map_err(|e| anyhow!("[recordings]: {e}"))
        }
    }
}

pub fn run(cmd: SessionsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SessionsCommand::List { config, last } => list(&config, last),
        SessionsCommand::Show { config, id, json } => show(&config, &id, json),
        SessionsCommand::Replay {
            config,
            id,
            realtime,
        } => replay(&config, &id, realtime),
    }
}

fn reader(config: &Path) -> anyhow::Result<(Config, PathBuf, LedgerReader)> {
    let (cfg, data_dir, ledger_path) = crate::config::parse(config)?;
    let reader = crate::config::open_reader(&cfg, &ledger_path)?;
    Ok((cfg, data_dir, reader))
}

#[derive(Default)]
struct Summary {
    start_us: i64,
    agent: String,
    connection: String,
    client: String,
    duration_us: Option<u64>,
    statements: Option<u64>,
    chunks: u64,
    recorded_bytes: u64,
}

fn list(config: &Path, last: Option<usize>) -> anyhow::Result<ExitCode> {
    let (_, _, reader) = reader(config)?;
    let err = |e: portcullis_ledger::LedgerError| anyhow!("{e}");
    let mut sessions: BTreeMap<String, Summary> = BTreeMap::new();
    let mut order = Vec::new();
    for ev in reader.of_kind("session_open").map_err(err)? {
        if let Ok(EventData::SessionOpen {
            principal,
            client_addr,
            connection,
            ..
        }) = ev.parse()
        {
            order.push(ev.session_id.clone());
            sessions.insert(
                ev.session_id.clone(),
                Summary {
                    start_us: ev.ts_us,
                    agent: principal.agent,
                    connection,
                    client: client_addr,
                    ..Summary::default()
                },
            );
        }
    }
    for ev in reader.of_kind("session_close").map_err(err)? {
        if let (
            Ok(EventData::SessionClose {
                duration_us,
                statements,
                ..
            }),
            Some(s),
        ) = (ev.parse(), sessions.get_mut(&ev.session_id))
        {
            s.duration_us = Some(duration_us);
            s.statements = Some(statements);
        }
    }
    for ev in reader.of_kind("recording_chunk").map_err(err)? {
        if let (Ok(EventData::RecordingChunk { raw_bytes, .. }), Some(s)) =
            (ev.parse(), sessions.get_mut(&ev.session_id))
        {
            s.chunks += 1;
            s.recorded_bytes += raw_bytes;
        }
    }
    if order.is_empty() {
        println!("no sessions in {} yet", reader.path().display());
        return Ok(ExitCode::SUCCESS);
    }
    let skip = last.map_or(0, |n| order.len().saturating_sub(n));
    println!(
        "{:<36}  {:<27}  {:<16}  {:<16}  {:<21}  {:>10}  {:>5}  recording",
        "session", "started", "agent", "connection", "client", "duration", "stmts"
    );
    for id in order.iter().skip(skip) {
        let Some(s) = sessions.get(id) else { continue };
        println!(
            "{:<36}  {:<27}  {:<16}  {:<16}  {:<21}  {:>10}  {:>5}  {}",
            id,
            crate::audit::timestamp(s.start_us),
            s.agent,
            s.connection,
            s.client,
            s.duration_us
                .map_or("open".to_string(), |d| format!("{:.3} s", d as f64 / 1e6)),
            s.statements.map_or("-".to_string(), |n| n.to_string()),
            if s.chunks == 0 {
                "-".to_string()
            } else {
                format!("{} chunk(s), {} bytes", s.chunks, s.recorded_bytes)
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The events of exactly one session whose id starts with `id`.
fn one_session(reader: &LedgerReader, id: &str) -> anyhow::Result<Vec<StoredEvent>> {
    if id.len() < 4 {
        bail!(
            "give at least the first 4 characters of the session id (`portcullis sessions list`)"
        );
    }
    let events = reader.of_session(id).map_err(|e| anyhow!("{e}"))?;
    let mut ids: Vec<&str> = events.iter().map(|e| e.session_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    match ids.len() {
        0 => bail!(
            "no session {id:?} in {}: `portcullis sessions list` shows them",
            reader.path().display()
        ),
        1 => Ok(events),
        n => bail!(
            "{n} sessions start with {id:?} ({}): give more of the id",
            ids.join(", ")
        ),
    }
}

fn show(config: &Path, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let (_, _, reader) = reader(config)?;
    for ev in one_session(&reader, id)? {
        println!(
            "{}",
            if json {
                crate::audit::json_line(&ev)
            } else {
                crate::audit::render(&ev)
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn replay(config: &Path, id: &str, realtime: bool) -> anyhow::Result<ExitCode> {
    let (cfg, data_dir, reader) = reader(config)?;
    let events = one_session(&reader, id)?;
    let mut chunks: Vec<(u64, String, Option<String>)> = events
        .iter()
        .filter_map(|e| match e.parse() {
            Ok(EventData::RecordingChunk {
                index, hash, error, ..
            }) => Some((index, hash, error)),
            _ => None,
        })
        .collect();
    let session = events
        .first()
        .map(|e| e.session_id.clone())
        .unwrap_or_default();
    if chunks.is_empty() {
        bail!(
            "session {session} has no recording: its connection had recording = \"off\" then \
             (set recording = \"commands\" or \"full\" on the connection); `portcullis sessions \
             show {id}` lists its statements"
        );
    }
    chunks.sort_by_key(|c| c.0);
    let store = open_store(&cfg, &data_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    println!("session {session}, recording in {}", store.name());
    let mut transcript = Transcript::new();
    let mut last_us = 0u64;
    let mut problems = 0;
    for (expected, (index, hash, error)) in chunks.iter().enumerate() {
        if *index != expected as u64 {
            println!("!! chunk {expected} is missing from the ledger (the next one is {index})");
            problems += 1;
        }
        if let Some(e) = error {
            println!("!! chunk {index} was never stored: {e}");
            problems += 1;
            continue;
        }
        let bytes = match rt.block_on(store.get(hash)) {
            Ok(b) => b,
            Err(e) => {
                println!("!! chunk {index}: {e}");
                problems += 1;
                continue;
            }
        };
        let chunk = match decode_chunk(&bytes) {
            Ok(c) if c.session_id == session && c.index == *index => c,
            Ok(c) => {
                println!(
                    "!! chunk {index} ({hash}) belongs to session {} chunk {}, not this one",
                    c.session_id, c.index
                );
                problems += 1;
                continue;
            }
            Err(e) => {
                println!("!! chunk {index} ({hash}): {e}");
                problems += 1;
                continue;
            }
        };
        for f in chunk.frames {
            let lines = transcript.feed(f.direction == TO_TARGET, f.offset_us, &f.bytes);
            if realtime && !lines.is_empty() {
                let pause = f.offset_us.saturating_sub(last_us).min(2_000_000);
                std::thread::sleep(Duration::from_micros(pause));
                last_us = f.offset_us;
            }
            for l in lines {
                println!("{l}");
            }
        }
    }
    if problems > 0 {
        println!("recording INCOMPLETE: {problems} chunk(s) missing, altered or never stored");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
