//! `portcullis audit tail|verify`: read the ledger as a person would, and check its chain.

use anyhow::anyhow;
use clap::{Args, Subcommand};
use portcullis_core::{EventData, Outcome};
use portcullis_ledger::{LedgerReader, Problem, StoredEvent, VerifyReport};
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
    /// The ledger file itself, instead of --config.
    #[arg(long, conflicts_with = "config")]
    ledger: Option<PathBuf>,
}

impl LedgerArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        match (&self.ledger, &self.config) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(c)) => Ok(crate::config::parse(c)?.2),
            (None, None) => Err(anyhow!("give --config FILE or --ledger FILE")),
        }
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
    /// Recompute the hash chain; report the first altered, missing or reordered event.
    Verify {
        #[command(flatten)]
        ledger: LedgerArgs,
    },
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Tail {
            ledger,
            lines,
            follow,
            json,
        } => tail(&ledger.path()?, lines, follow, json),
        AuditCommand::Verify { ledger } => verify(&ledger.path()?),
    }
}

fn tail(path: &std::path::Path, n: usize, follow: bool, json: bool) -> anyhow::Result<ExitCode> {
    let reader = LedgerReader::open(path).map_err(|e| anyhow!("{e}"))?;
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

fn verify(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let reader = LedgerReader::open(path).map_err(|e| anyhow!("{e}"))?;
    let started = std::time::Instant::now();
    let report = reader
        .verify(|done| eprint!("\rverifying… {done} events"))
        .map_err(|e| anyhow!("{e}"))?;
    eprint!("\r");
    match report {
        VerifyReport::Verified { events, head } => {
            println!(
                "ledger OK: {events} events verified in {:.2} s; chain head {}",
                started.elapsed().as_secs_f64(),
                hex(&head)
            );
            Ok(ExitCode::SUCCESS)
        }
        VerifyReport::Broken {
            seq,
            problem,
            detail,
        } => {
            let what = match problem {
                Problem::Altered => "altered",
                Problem::Missing => "missing",
                Problem::Reordered => "reordered",
            };
            println!("ledger verification FAILED at event #{seq}: {what} — {detail}");
            Ok(ExitCode::from(1))
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn timestamp(ts_us: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(ts_us.max(0) as u64);
    humantime::format_rfc3339_micros(t).to_string()
}

fn json_line(ev: &StoredEvent) -> String {
    let data: serde_json::Value =
        serde_json::from_str(&ev.data).unwrap_or(serde_json::Value::String(ev.data.clone()));
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
        Err(_) => format!("{} (unreadable: {})", ev.kind, ev.data),
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
                duration_us,
                ..
            } => format!(
                "session closed: {} after {statements} statement(s), {:.1} s: {reason}",
                principal.agent,
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
            EventData::Statement { principal, connection, text, params, verdict, reason, .. } => {
                let mut s = format!("{}@{connection}: {}", principal.agent, one_line(&text));
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
            EventData::Result { statement_seq, outcome, tags, rows, sqlstate, message, duration_us } => {
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
                format!("  ↳ #{statement_seq} {what} in {:.3} ms", duration_us as f64 / 1000.0)
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
            EventData::TokenRefused { endpoint, client_addr, reason } => {
                format!("TOKEN REFUSED at {endpoint} for {client_addr}: {reason}")
            }
        },
    };
    format!("{head} {body}")
}

/// `agent (method)`, with the person it acts for, the chain and the grant when there are any.
fn who(p: &portcullis_core::Principal) -> String {
    let mut s = format!("{} ({})", p.agent, p.auth_method);
    if let Some(id) = p.identity.as_deref() {
        if id.chain.len() > 1 {
            let chain: Vec<&str> = id.chain.iter().map(|l| l.subject.as_str()).collect();
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
