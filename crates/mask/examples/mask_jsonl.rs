//! `portcullis mask test --json` with the default configuration, on this crate alone: text
//! lines on stdin, one JSON object per line on stdout (`line`, `masked`, `findings` with
//! `entity` and code-point `start`/`end`). For the accuracy bench (bench/mask/run.sh with
//! `PORTCULLIS_BIN` set to this example), where building the whole gateway is not needed to
//! measure the detectors. Arguments (`mask test --json`, as compare.py passes them) are
//! ignored.
//!
//!     cargo build -p portcullis-mask --example mask_jsonl

use portcullis_core::config::MaskingConfig;
use portcullis_mask::{Counts, Masker};
use std::io::{BufRead, BufWriter, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mask_jsonl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let masker = Masker::new(&MaskingConfig::default(), None)?;
    let profile = masker
        .profile("standard")
        .ok_or("the built-in profile \"standard\" is missing")?;
    let stdin = std::io::stdin().lock();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut counts = Counts::default();
    for (i, line) in stdin.lines().enumerate() {
        let line = line.map_err(|e| format!("stdin line {}: {e}", i + 1))?;
        let masked = masker.mask_text(&profile, &line, &mut counts);
        let (mut byte, mut chars) = (0usize, 0usize);
        let mut to_chars = |b: usize| {
            chars += line[byte..b].chars().count();
            byte = b;
            chars
        };
        let findings: Vec<serde_json::Value> = masker
            .findings(line.as_bytes())
            .iter()
            .map(|f| {
                let start = to_chars(f.span.start);
                let end = to_chars(f.span.end);
                serde_json::json!({
                    "entity": masker.entities()[f.entity],
                    "start": start,
                    "end": end,
                })
            })
            .collect();
        let obj = serde_json::json!({ "line": i + 1, "masked": masked, "findings": findings });
        writeln!(out, "{obj}")?;
    }
    out.flush()?;
    Ok(())
}
