//! `portcullis retention run`, and the same rules applied on a schedule inside `serve`.

use anyhow::anyhow;
use clap::Subcommand;
use portcullis_core::config::Config;
use portcullis_ledger::retention::{self, Decision, RetentionPlan};
use portcullis_ledger::{Ledger, LedgerError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// Apply the `[retention]` rules now: delete the SQL text, parameters and error messages
    /// of segments past their maximum age (their keys are destroyed; the events, hashes and
    /// checkpoints stay). A running gateway does this itself every `interval_mins`.
    Run {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// Only show what would be deleted and what is kept, and why.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(cmd: RetentionCommand) -> anyhow::Result<ExitCode> {
    let RetentionCommand::Run { config, dry_run } = cmd;
    let (cfg, data_dir, ledger_path) = crate::config::parse(&config)?;
    if cfg.retention.rules.is_empty() {
        println!(
            "no [[retention.rules]] in {}: nothing is ever deleted",
            config.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Take the ledger first: a running gateway holds it (and applies the rules itself).
    let ledger = if dry_run {
        None
    } else {
        let opts = crate::serve::ledger_options(&cfg, &data_dir, &ledger_path)?;
        match Ledger::open(opts) {
            Ok(l) => Some(l),
            Err(LedgerError::Locked { .. }) => {
                return Err(anyhow!(
                    "the gateway is running on this ledger and applies these rules itself every \
                     {} minutes (and at start); wait for it, or stop it to run them now. \
                     `--dry-run` works while it runs",
                    cfg.retention.interval_mins
                ))
            }
            Err(e) => return Err(anyhow!("{e}")),
        }
    };
    let reader = crate::config::open_reader(&cfg, &ledger_path)?;
    let plan = retention::plan(&reader, &cfg.retention.rules, portcullis_core::now_us())
        .map_err(|e| anyhow!("{e}"))?;
    drop(reader);
    print_plan(&plan);
    let n = plan.deletions().count();
    let Some(ledger) = ledger.filter(|_| n > 0) else {
        if dry_run {
            println!("dry run: nothing deleted ({n} segment(s) would be)");
        } else {
            println!("nothing to delete");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let by = std::env::var("USER").unwrap_or_else(|_| "portcullis retention run".into());
    let rt = crate::serve::runtime()?;
    let store = crate::sessions::recordings_store(&cfg, &data_dir)?;
    let result = rt.block_on(ledger.apply_retention(&plan, &by, store.as_ref()));
    ledger.close();
    let seqs = result.map_err(|e| anyhow!("{e}"))?;
    println!(
        "deleted {} segment(s); recorded as ledger events {}",
        seqs.len(),
        seqs.iter()
            .map(|s| format!("#{s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

fn print_plan(plan: &RetentionPlan) {
    println!("{:<40} {:>8}  decision", "segment", "events");
    for item in &plan.items {
        let events = item.range.map_or(0, |r| r.2);
        let what = match &item.decision {
            Decision::Delete {
                rule,
                age_days,
                max_age_days,
            } => format!("DELETE ({age_days} days old, rule {rule} keeps {max_age_days})"),
            Decision::Keep { why } => format!("keep: {why}"),
            Decision::AlreadyDeleted => "deleted before".to_string(),
        };
        let name = match &item.chunks {
            Some(_) => format!("{} (recordings)", item.segment.segment),
            None => item.segment.segment.clone(),
        };
        println!("{name:<40} {events:>8}  {what}");
    }
}

/// Applies the rules every `interval_mins` (and once at start) inside a running gateway. The
/// rules are read from the configuration file again at every run, so a legal hold added to it
/// counts from the next run on, without a restart. If the file no longer parses, nothing is
/// deleted until it does.
pub async fn schedule(config_path: PathBuf, cfg: Config, ledger_path: PathBuf, ledger: Ledger) {
    let every = Duration::from_secs(cfg.retention.interval_mins.max(1) * 60);
    loop {
        match crate::config::parse(&config_path) {
            Ok((now_cfg, ..)) if now_cfg.retention.rules.is_empty() => {}
            Ok((now_cfg, data_dir, _)) => {
                if let Err(e) = apply_once(&now_cfg, &data_dir, &ledger_path, &ledger).await {
                    tracing::error!(error = %e, "retention run failed; it is retried at the next interval");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "retention skipped: the configuration does not parse; nothing is deleted until it does")
            }
        }
        tokio::time::sleep(every).await;
    }
}

async fn apply_once(
    cfg: &Config,
    data_dir: &Path,
    path: &Path,
    ledger: &Ledger,
) -> anyhow::Result<()> {
    let rules = cfg.retention.rules.clone();
    let path = path.to_path_buf();
    let for_plan = cfg.clone();
    let plan = tokio::task::spawn_blocking(move || {
        let reader = crate::config::open_reader(&for_plan, &path)?;
        retention::plan(&reader, &rules, portcullis_core::now_us()).map_err(|e| anyhow!("{e}"))
    })
    .await
    .map_err(|e| anyhow!("{e}"))??;
    let store = crate::sessions::recordings_store(cfg, data_dir)?;
    let seqs = ledger
        .apply_retention(&plan, "gateway schedule", store.as_ref())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    if !seqs.is_empty() {
        tracing::info!(
            segments = seqs.len(),
            "retention deleted sealed fields of old segments"
        );
    }
    Ok(())
}
