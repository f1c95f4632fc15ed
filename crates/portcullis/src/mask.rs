//! `portcullis mask test`: what the masker would do to text or CSV on stdin, for tuning the
//! detectors and column rules of `[masking]` before they meet production data.

use anyhow::{anyhow, bail, Context};
use clap::{Subcommand, ValueEnum};
use portcullis_core::config::Config;
use portcullis_mask::{Counts, Field, FieldKind, Masker, Profile};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum MaskCommand {
    /// Mask stdin line by line (or as CSV) and print the result; counts per entity go to
    /// stderr. Without --config the built-in defaults apply (every detector, redacted).
    Test {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: Option<PathBuf>,
        /// Masking profile to apply (default: `[masking] default_profile`).
        #[arg(long)]
        profile: Option<String>,
        #[arg(long, value_enum, default_value_t = InputFormat::Text)]
        format: InputFormat,
        /// With --format csv: the table the rows come from, so that `table.column` rules
        /// apply to the header's columns.
        #[arg(long)]
        table: Option<String>,
        /// One JSON object per input line: the masked text and every finding (entity and
        /// span in Unicode code points, end exclusive), for scripts and benchmarks.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum InputFormat {
    /// Every line is free text.
    Text,
    /// RFC 4180 CSV with a header row; column rules apply by header name.
    Csv,
}

pub fn run(cmd: MaskCommand) -> anyhow::Result<ExitCode> {
    let MaskCommand::Test {
        config,
        profile,
        format,
        table,
        json,
    } = cmd;
    let (cfg, base, where_) = match &config {
        Some(path) => (
            crate::config::parse(path)?.0,
            path.parent().map(|p| p.to_path_buf()).unwrap_or_default(),
            path.display().to_string(),
        ),
        None => (
            Config::default(),
            PathBuf::from("."),
            "defaults".to_string(),
        ),
    };
    let masker = crate::config::masker(&cfg, &base, &where_)?;
    let name = profile.unwrap_or_else(|| cfg.masking.default_profile.clone());
    let profile = masker.profile(&name).ok_or_else(|| {
        anyhow!("no masking profile {name:?}; define it under [masking.profiles.{name}]")
    })?;
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut counts = Counts::default();
    match format {
        InputFormat::Text => text(&masker, &profile, stdin, &mut out, json, &mut counts)?,
        InputFormat::Csv => {
            if json {
                bail!("--json reads free text; use it without --format csv");
            }
            csv(
                &masker,
                &profile,
                table.as_deref(),
                stdin,
                &mut out,
                &mut counts,
            )?
        }
    }
    out.flush()?;
    let by = counts.by_name(&masker);
    if by.is_empty() {
        eprintln!("masked nothing (profile {name:?})");
    } else {
        let list: Vec<String> = by.iter().map(|(e, n)| format!("{e}={n}")).collect();
        eprintln!("masked (profile {name:?}): {}", list.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

fn text(
    masker: &Masker,
    profile: &Profile,
    input: impl BufRead,
    out: &mut impl Write,
    json: bool,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("stdin line {}: not UTF-8 text", i + 1))?;
        let masked = masker.mask_text(profile, &line, counts);
        if !json {
            writeln!(out, "{masked}")?;
            continue;
        }
        // Byte offsets to code points, in one walk over the line.
        let findings = masker.findings(line.as_bytes());
        let mut list = Vec::with_capacity(findings.len());
        let (mut byte, mut chars) = (0usize, 0usize);
        let mut to_chars = |b: usize| {
            chars += line[byte..b].chars().count();
            byte = b;
            chars
        };
        for f in &findings {
            let start = to_chars(f.span.start);
            let end = to_chars(f.span.end);
            list.push(serde_json::json!({
                "entity": masker.entities()[f.entity],
                "start": start,
                "end": end,
            }));
        }
        let obj = serde_json::json!({ "line": i + 1, "masked": masked, "findings": list });
        writeln!(out, "{obj}")?;
    }
    Ok(())
}

fn csv(
    masker: &Masker,
    profile: &Profile,
    table: Option<&str>,
    mut input: impl BufRead,
    out: &mut impl Write,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    let mut all = String::new();
    input
        .read_to_string(&mut all)
        .context("stdin: not UTF-8 text")?;
    let rows = parse_csv(&all)?;
    let Some((header, body)) = rows.split_first() else {
        return Ok(());
    };
    let tables: Vec<&str> = table.into_iter().collect();
    let rules: Vec<_> = header
        .iter()
        .map(|h| profile.column_rule(h, &tables))
        .collect();
    write_csv_row(out, header.iter().map(|h| Some(h.as_str())))?;
    for row in body {
        let masked: Vec<Option<String>> = row
            .iter()
            .enumerate()
            .map(|(i, v)| {
                match masker.mask_field(
                    profile,
                    v.as_bytes(),
                    FieldKind::Text,
                    rules.get(i).copied().flatten(),
                    counts,
                ) {
                    Field::Unchanged => Some(v.clone()),
                    Field::Value(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    Field::Null => None,
                }
            })
            .collect();
        write_csv_row(out, masked.iter().map(|v| v.as_deref()))?;
    }
    Ok(())
}

/// RFC 4180: fields separated by commas, rows by CRLF or LF, quoted fields with `""` inside.
fn parse_csv(text: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c)
            }
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                line += 1;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        bail!("stdin line {line}: a quoted CSV field is never closed");
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

/// Writes one CSV row; a NULL (masked to NULL) is an empty unquoted field.
fn write_csv_row<'a>(
    out: &mut impl Write,
    fields: impl Iterator<Item = Option<&'a str>>,
) -> std::io::Result<()> {
    let mut first = true;
    for f in fields {
        if !first {
            out.write_all(b",")?;
        }
        first = false;
        match f {
            None => {}
            Some(v) if v.contains([',', '"', '\n', '\r']) || v.is_empty() => {
                write!(out, "\"{}\"", v.replace('"', "\"\""))?;
            }
            Some(v) => out.write_all(v.as_bytes())?,
        }
    }
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_quotes_commas_and_newlines() {
        let rows = parse_csv("a,b\r\n\"x, y\",\"say \"\"hi\"\"\nthere\"\n3,\n").expect("parses");
        assert_eq!(
            rows,
            vec![
                vec!["a".to_string(), "b".into()],
                vec!["x, y".into(), "say \"hi\"\nthere".into()],
                vec!["3".into(), "".into()]
            ]
        );
        let mut out = Vec::new();
        write_csv_row(&mut out, rows[1].iter().map(|s| Some(s.as_str()))).expect("writes");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "\"x, y\",\"say \"\"hi\"\"\nthere\"\n"
        );
        assert!(parse_csv("\"open").is_err());
    }
}
