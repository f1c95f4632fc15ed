//! `portcullis audit tail|verify|checkpoint|prove|verify-proof`: read the ledger as a person
//! would, check its chain and signed checkpoints, and prove single events to an auditor.

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use portcullis_core::{EventData, Outcome};
use portcullis_ledger::{
    CheckpointSigner, CheckpointVerifier, InclusionProof, LedgerReader, StoredEvent, VerifyOptions,
    VerifyReport,
};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Args)]
pub struct LedgerArgs {
    /// The gateway's configuration file (the ledger path is read from it).
    #[arg(
        long,
        short,
        env = "PORTCULLIS_CONFIG",
        required_unless_present = "ledger"
    )]
    config: Option<PathBuf>,
    /// The ledger file itself (or a PostgreSQL store's `postgres://` URL), instead of
    /// --config.
    #[arg(long, conflicts_with = "config")]
    ledger: Option<PathBuf>,
}

impl LedgerArgs {
    /// Opens the ledger read-only; also returns its name for messages.
    fn reader(&self) -> anyhow::Result<(LedgerReader, String)> {
        let reader = match (&self.ledger, &self.config) {
            (Some(p), _) => match p.to_str() {
                Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                    LedgerReader::open_postgres(url)
                }
                _ => LedgerReader::open(p),
            }
            .map_err(|e| anyhow!("{e}"))?,
            (None, Some(c)) => {
                let (config, _, path) = crate::config::parse(c)?;
                crate::config::open_reader(&config, &path)?
            }
            (None, None) => return Err(anyhow!("give --config FILE or --ledger FILE")),
        };
        let name = reader.path().display().to_string();
        Ok((reader, name))
    }

    /// With --config and checkpoints on: the signing key file and the mirror folder.
    fn checkpoint_paths(&self) -> anyhow::Result<Option<(PathBuf, Option<PathBuf>)>> {
        let Some(c) = self.config.as_ref().filter(|_| self.ledger.is_none()) else {
            return Ok(None);
        };
        let (config, data_dir, _) = crate::config::parse(c)?;
        if !config.store.checkpoints.enabled {
            return Ok(None);
        }
        Ok(Some(crate::config::checkpoint_paths(&config, &data_dir)))
    }
}

impl LedgerArgs {
    /// With --config: the checkpoint mirror bucket, if configured.
    fn mirror_bucket(&self) -> anyhow::Result<Option<portcullis_ledger::blob::BlobStore>> {
        let Some(c) = self.config.as_ref().filter(|_| self.ledger.is_none()) else {
            return Ok(None);
        };
        let (config, ..) = crate::config::parse(c)?;
        crate::config::mirror_bucket(&config)
    }
}

/// A verifier key given as text or as a file holding it.
fn read_key(arg: &str) -> anyhow::Result<CheckpointVerifier> {
    let text = if std::path::Path::new(arg).is_file() {
        std::fs::read_to_string(arg).with_context(|| format!("cannot read the key file {arg}"))?
    } else {
        arg.to_string()
    };
    CheckpointVerifier::parse(&text).map_err(|e| {
        anyhow!(
            "--key: {e}; pass the verifier key (the line in the gateway's \
             keys/ledger-checkpoint.key.pub) or that file's path"
        )
    })
}

/// The gateway's own verifier key, from `<key file>.pub` or the key file itself.
fn own_key(key_file: &std::path::Path) -> anyhow::Result<Option<CheckpointVerifier>> {
    let public = portcullis_ledger::checkpoint::pub_path(key_file);
    if let Ok(text) = std::fs::read_to_string(&public) {
        return CheckpointVerifier::parse(&text)
            .map(Some)
            .map_err(|e| anyhow!("{}: {e}", public.display()));
    }
    match std::fs::read_to_string(key_file) {
        Ok(text) => CheckpointSigner::parse(text.trim())
            .map(|s| Some(s.verifier()))
            .map_err(|e| anyhow!("{}: {e}", key_file.display())),
        Err(_) => Ok(None),
    }
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Show the latest events readably.
    Tail {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// How many events to show first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing new events as they are written.
        #[arg(long, short)]
        follow: bool,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Recompute the hash chain and the Merkle tree; check every signed checkpoint (stored,
    /// mirrored, or given) against the events; report the first problem.
    Verify {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The verifier key checkpoints must be signed with (text `name+id+key`, or a file
        /// holding it). Default with --config: the gateway's own `<key_file>.pub`. An auditor
        /// should pass the key they were given, not trust the one next to the ledger.
        #[arg(long)]
        key: Option<String>,
        /// A checkpoint note kept elsewhere (an auditor's copy, an evidence packet); may be
        /// repeated. With --config the mirror folder's checkpoint is always included.
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
    },
    /// Print a signed checkpoint note (the latest by default), to keep as an auditor.
    Checkpoint {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The tree size of a stored checkpoint instead of the latest.
        #[arg(long)]
        size: Option<u64>,
        /// List every stored checkpoint instead (size, time, root).
        #[arg(long)]
        list: bool,
    },
    /// Print an inclusion proof of event SEQ (JSON), checkable offline against a checkpoint.
    Prove {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The event's sequence number.
        seq: u64,
        /// Prove against the stored checkpoint of this tree size (default: the latest).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Check an inclusion proof offline: the event's hash, its path to the root and the
    /// checkpoint's signature. Needs no ledger.
    VerifyProof {
        /// The proof, as printed by `audit prove` ("-" for standard input).
        file: PathBuf,
        /// The verifier key (text or a file holding it).
        #[arg(long)]
        key: String,
    },
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Tail {
            ledger,
            lines,
            follow,
            json,
        } => tail(&ledger, lines, follow, json),
        AuditCommand::Verify {
            ledger,
            key,
            checkpoints,
        } => verify(&ledger, key.as_deref(), &checkpoints),
        AuditCommand::Checkpoint { ledger, size, list } => checkpoint(&ledger, size, list),
        AuditCommand::Prove { ledger, seq, size } => prove(&ledger, seq, size),
        AuditCommand::VerifyProof { file, key } => verify_proof(&file, &key),
    }
}

fn checkpoint(args: &LedgerArgs, size: Option<u64>, list: bool) -> anyhow::Result<ExitCode> {
    let (reader, path) = args.reader()?;
    let all = reader.checkpoints().map_err(|e| anyhow!("{e}"))?;
    if list {
        for c in &all {
            println!("{:>12}  {}  {}", c.size, timestamp(c.ts_us), hex(&c.root));
        }
        if all.is_empty() {
            eprintln!("no checkpoints in {path} yet");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let found = match size {
        Some(n) => all.iter().find(|c| c.size == n),
        None => all.last(),
    };
    match found {
        Some(c) => {
            print!("{}", c.note);
            Ok(ExitCode::SUCCESS)
        }
        None => Err(anyhow!(
            "{} has no {}: `portcullis audit checkpoint --list` shows what there is; the gateway \
             signs one every store.checkpoints.every_secs seconds while events arrive, and at \
             shutdown",
            path,
            size.map_or("checkpoint yet".to_string(), |n| format!(
                "checkpoint of tree size {n}"
            ))
        )),
    }
}

fn prove(args: &LedgerArgs, seq: u64, size: Option<u64>) -> anyhow::Result<ExitCode> {
    let (reader, _) = args.reader()?;
    let proof = reader.prove(seq, size).map_err(|e| anyhow!("{e}"))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&proof.to_json()).context("cannot print the proof")?
    );
    Ok(ExitCode::SUCCESS)
}

fn verify_proof(file: &std::path::Path, key: &str) -> anyhow::Result<ExitCode> {
    let key = read_key(key)?;
    let text = if file == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read the proof from stdin")?
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the proof {}", file.display()))?
    };
    let proof = InclusionProof::from_json(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    match proof.verify(&key) {
        Ok(cp) => {
            println!(
                "proof OK: event #{} ({}) is in the ledger {} of {} events (root {}), signed by {}",
                proof.event.seq,
                proof.event.kind,
                cp.origin,
                cp.size,
                hex(&cp.root),
                key.to_vkey()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("proof FAILED: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn tail(args: &LedgerArgs, n: usize, follow: bool, json: bool) -> anyhow::Result<ExitCode> {
    let (reader, _) = args.reader()?;
    let mut last_seq = 0;
    let stdout = std::io::stdout();
    let print = |events: Vec<StoredEvent>, last_seq: &mut u64| -> anyhow::Result<()> {
        let mut out = stdout.lock();
        for ev in events {
            *last_seq = ev.seq;
            let line = if json { json_line(&ev) } else { render(&ev) };
            if writeln!(out, "{line}").is_err() {
                return Ok(()); // reader went away (e.g. `| head`)
            }
        }
        let _ = out.flush();
        Ok(())
    };
    print(reader.last(n).map_err(|e| anyhow!("{e}"))?, &mut last_seq)?;
    if follow {
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let events = reader.after(last_seq, 1000).map_err(|e| anyhow!("{e}"))?;
            print(events, &mut last_seq)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(args: &LedgerArgs, key: Option<&str>, extra: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut opts = VerifyOptions::default();
    let configured = args.checkpoint_paths()?;
    opts.key = match (key, &configured) {
        (Some(k), _) => Some(read_key(k)?),
        (None, Some((key_file, _))) => own_key(key_file)?,
        (None, None) => None,
    };
    let mut mirror_missing = None;
    if let Some((_, Some(mirror))) = &configured {
        let file = portcullis_ledger::checkpoint::mirror_file(mirror);
        match std::fs::read_to_string(&file) {
            Ok(note) => opts.external.push((file.display().to_string(), note)),
            Err(e) => mirror_missing = Some(format!("{} ({e})", file.display())),
        }
    }
    if let Some(bucket) = args.mirror_bucket()? {
        let place = format!(
            "{}/{}",
            bucket.name(),
            portcullis_ledger::blob::MIRROR_LATEST
        );
        match portcullis_ledger::blob::mirrored_checkpoint(&bucket) {
            Ok(Some(note)) => opts.external.push((place, note)),
            Ok(None) => mirror_missing = Some(format!("{place} (no such object)")),
            Err(e) => return Err(anyhow!("the checkpoint mirror bucket: {e}")),
        }
    }
    for f in extra {
        let note = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the checkpoint {}", f.display()))?;
        opts.external.push((f.display().to_string(), note));
    }
    let (reader, _) = args.reader()?;
    let started = std::time::Instant::now();
    let report = reader
        .verify_with(&opts, |done| eprint!("\rverifying… {done} events"))
        .map_err(|e| anyhow!("{e}"))?;
    eprint!("\r");
    match report {
        VerifyReport::Verified {
            events,
            head,
            root,
            checkpoints,
        } => {
            if let Some(missing) = mirror_missing.filter(|_| checkpoints.checked > 0) {
                // The ledger has signed checkpoints, so the mirror had them too: it was removed.
                println!(
                    "ledger verification FAILED: the configured mirror has no checkpoint at \
                     {missing}, although the ledger holds signed checkpoints; the copy that would \
                     show a truncated ledger is gone"
                );
                return Ok(ExitCode::from(1));
            }
            println!(
                "ledger OK: {events} events verified in {:.2} s; chain head {}; Merkle root {}",
                started.elapsed().as_secs_f64(),
                hex(&head),
                hex(&root)
            );
            match (&opts.key, checkpoints.checked) {
                (_, 0) => println!(
                    "no signed checkpoints to compare with: a deleted tail or a rewritten \
                     ledger would not show (turn on store.checkpoints)"
                ),
                (Some(key), n) => println!(
                    "{n} signed checkpoint(s) match the events (the latest covers {} events), \
                     signatures checked with {}",
                    checkpoints.latest,
                    key.to_vkey()
                ),
                (None, n) => println!(
                    "{n} checkpoint(s) match the events (the latest covers {} events); \
                     signatures NOT checked: pass --key",
                    checkpoints.latest
                ),
            }
            if checkpoints.latest < events {
                println!(
                    "events {} to {events} are not covered by a checkpoint yet",
                    checkpoints.latest + 1
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        VerifyReport::Broken {
            seq,
            problem,
            detail,
        } => {
            let what = problem.to_string();
            println!("ledger verification FAILED at event #{seq}: {what} — {detail}");
            Ok(ExitCode::from(1))
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn timestamp(ts_us: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(ts_us.max(0) as u64);
    humantime::format_rfc3339_micros(t).to_string()
}

pub fn json_line(ev: &StoredEvent) -> String {
    let data: serde_json::Value = serde_json::from_str(ev.json())
        .unwrap_or_else(|_| serde_json::Value::String(ev.json().to_string()));
    serde_json::json!({
        "seq": ev.seq,
        "ts": timestamp(ev.ts_us),
        "session": ev.session_id,
        "kind": ev.kind,
        "data": data,
        "hash": hex(&ev.hash),
    })
    .to_string()
}

/// One readable line per event.
pub fn render(ev: &StoredEvent) -> String {
    let short = |s: &str| s.chars().take(8).collect::<String>();
    let head = format!(
        "{} #{:<6} {:<8}",
        timestamp(ev.ts_us),
        ev.seq,
        short(&ev.session_id)
    );
    let body = match ev.parse() {
        Err(_) => format!("{} (unreadable: {})", ev.kind, ev.json()),
        Ok(data) => match data {
            EventData::SessionOpen {
                principal,
                client_addr,
                connection,
                tls,
                ..
            } => format!(
                "session opened: {} from {client_addr} to {connection}{}",
                who(&principal),
                if tls { " over TLS" } else { "" }
            ),
            EventData::SessionClose {
                principal,
                reason,
                statements,
                refused,
                duration_us,
                ..
            } => format!(
                "session closed: {} after {}, {:.1} s: {reason}",
                principal.agent,
                match refused {
                    Some(refused) => format!("{statements} run, {refused} refused"),
                    // Written before refused statements were counted.
                    None => format!("{statements} statement(s)"),
                },
                duration_us as f64 / 1e6
            ),
            EventData::AuthSuccess { principal, client_addr, connection, .. } => format!(
                "auth ok: {} from {client_addr} for {connection}",
                who(&principal)
            ),
            EventData::AuthFailure { claimed_agent, client_addr, connection, reason, sqlstate, .. } => format!(
                "AUTH FAILED: {claimed_agent:?} from {client_addr} for {connection}: {reason} ({sqlstate})"
            ),
            EventData::ConnectFailure { principal, connection, reason, sqlstate, .. } => format!(
                "CONNECT FAILED: {} to {connection}: {reason} ({sqlstate})",
                principal.agent
            ),
            EventData::Statement { principal, connection, text, params, verdict, reason, sealed, .. } => {
                let shown = match &sealed {
                    Some(s) if s.deleted => format!("[text deleted by retention: {}]", s.segment),
                    Some(s) => format!("[sealed: no key for {}]", s.segment),
                    None => one_line(&text),
                };
                let mut s = format!("{}@{connection}: {shown}", principal.agent);
                if let Some(r) = principal.requester() {
                    s.push_str(&format!("  [for {r}]"));
                }
                if !params.is_empty() {
                    let shown: Vec<String> = params
                        .iter()
                        .enumerate()
                        .map(|(i, p)| match &p.value {
                            Some(v) => format!("${}={}", i + 1, one_line(v)),
                            None => format!("${}=NULL", i + 1),
                        })
                        .collect();
                    s.push_str(&format!("  [{}]", shown.join(", ")));
                }
                if verdict != "allow" {
                    s.push_str(&format!("  ({} {})", verdict.to_uppercase(), reason.unwrap_or_default()));
                }
                s
            }
            EventData::PolicySnapshot { hash, trigger, config, policies } => format!(
                "policy snapshot {} in force ({trigger}): {} and {} policy file(s)",
                short(&hash),
                config.path,
                policies.len()
            ),
            EventData::PolicyRejected { trigger, error, kept } => format!(
                "POLICY REJECTED ({trigger}), {} stays in force: {error}",
                short(&kept)
            ),
            EventData::Result { statement_seq, outcome, tags, rows, sqlstate, message, duration_us, sealed, masked } => {
                let message = match &sealed {
                    Some(s) if s.deleted => Some("[message deleted by retention]".to_string()),
                    Some(_) => Some("[sealed]".to_string()),
                    None => message,
                };
                let what = match outcome {
                    Outcome::Ok => format!("ok {} rows={rows}", tags.join("; ")),
                    Outcome::Refused => format!(
                        "refused {} {}",
                        sqlstate.unwrap_or_default(),
                        message.unwrap_or_default()
                    ),
                    Outcome::Error => format!(
                        "ERROR {} {}",
                        sqlstate.unwrap_or_default(),
                        message.unwrap_or_default()
                    ),
                    other => format!("{other:?}").to_lowercase(),
                };
                let masked = if masked.is_empty() {
                    String::new()
                } else {
                    let list: Vec<String> = masked.iter().map(|(e, n)| format!("{e}={n}")).collect();
                    format!(", masked {}", list.join(" "))
                };
                format!("  ↳ #{statement_seq} {what} in {:.3} ms{masked}", duration_us as f64 / 1000.0)
            }
            EventData::Cancel { client_addr, matched } => format!(
                "cancel request from {client_addr}{}",
                if matched { "" } else { " (no matching session)" }
            ),
            EventData::ProtocolError { client_addr, detail } => {
                format!("PROTOCOL ERROR from {client_addr}: {detail}")
            }
            EventData::GrantCreated { grant, .. } => format!(
                "grant {} issued by {} for agent {} on {} until {} ({}){}{}",
                grant.id,
                grant.requester,
                grant.agent,
                grant.connection,
                portcullis_identity::jwt::show_time(grant.expires_at),
                grant.reason,
                grant.ticket.map(|t| format!(" ticket {t}")).unwrap_or_default(),
                if grant.actions.is_empty() {
                    String::new()
                } else {
                    format!(" actions {}", grant.actions.join(","))
                }
            ),
            EventData::GrantRevoked { id, by, sessions_ended, .. } => format!(
                "GRANT REVOKED {id} by {by}; {sessions_ended} live session(s) ended"
            ),
            EventData::TokenIssued { grant_type, principal, client_addr } => format!(
                "token issued ({grant_type}) to {client_addr}: {}",
                who(&principal)
            ),
            EventData::RetentionDeleted { rule, segment, first_seq, last_seq, events, age_days, by, what, .. } => format!(
                "RETENTION deleted the {} of {segment} ({events} events, #{first_seq}..#{last_seq}, {age_days} days old) under rule {rule}, run by {by}",
                if what == "recordings" { "recording chunks" } else { "sealed fields" }
            ),
            EventData::TokenRefused { endpoint, client_addr, reason } => {
                format!("TOKEN REFUSED at {endpoint} for {client_addr}: {reason}")
            }
            EventData::RecordingChunk { index, hash, bytes, raw_bytes, frames, error, .. } => match error {
                None => format!(
                    "recording chunk #{index}: {frames} frames, {raw_bytes} bytes ({bytes} stored) sha256 {}",
                    &hash[..hash.len().min(16)]
                ),
                Some(e) => format!("RECORDING CHUNK #{index} NOT STORED: {e}"),
            },
        },
    };
    format!("{head} {body}")
}

/// `agent (method)`, with the person it acts for, the chain and the grant when there are any.
fn who(p: &portcullis_core::Principal) -> String {
    let mut s = format!("{} ({})", p.agent, p.auth_method);
    if let Some(id) = p.identity.as_deref() {
        if id.chain.len() > 1 {
            // An agent known to its provider by another sub shows it: `agent-etl (sub 6f1c…)`.
            let chain: Vec<String> = id
                .chain
                .iter()
                .map(|l| match &l.idp_subject {
                    Some(sub) if sub != &l.subject => format!("{} (sub {sub})", l.subject),
                    _ => l.subject.clone(),
                })
                .collect();
            s.push_str(&format!(" for {}", chain.join(" → ")));
        } else if let Some(r) = id.requester() {
            s.push_str(&format!(" for {r}"));
        }
        if let Some(g) = &id.grant {
            s.push_str(&format!(" under grant {} ({})", g.id, g.reason));
        }
    }
    s
}

fn one_line(s: &str) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 200 {
        let cut: String = flat.chars().take(200).collect();
        format!("{cut}…")
    } else {
        flat
    }
}
