//! Retention: deciding which segments' sealed fields may be deleted, and deleting them by
//! destroying their keys (see [`crate::seal`]), each deletion recorded as a ledger event
//! *before* the key is destroyed.
//!
//! A segment is one connection's events of one UTC day. Its *age* is the time since that day
//! ended, so every event in it is at least that old. It is deleted when
//! * a rule matching its connection has `max_age_days` and the age reached it, and
//! * the age reached the `min_age_days` of **every** matching rule, and
//! * no matching rule has `legal_hold`.
//!
//! A segment no rule matches is kept forever. Deleting is idempotent: a key already gone is
//! skipped; a crash between the deletion event and the key's destruction leaves the key,
//! and the next run destroys it (recording it again).

use portcullis_core::config::RetentionRule;
use portcullis_core::{EventData, NewEvent};

use crate::error::LedgerError;
use crate::reader::LedgerReader;
use crate::seal::{day_number, Segment, DAY_US};
use crate::writer::Ledger;

/// What retention would do with one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Past the maximum age of `rule`.
    Delete {
        rule: String,
        age_days: u64,
        max_age_days: u64,
    },
    /// Kept, and why.
    Keep { why: String },
    /// Its key was deleted before.
    AlreadyDeleted,
}

/// One segment in a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanItem {
    pub segment: Segment,
    /// First seq, last seq and number of events sealed under it (`None`: no event uses it);
    /// for recordings, of its `recording_chunk` events.
    pub range: Option<(u64, u64, u64)>,
    pub decision: Decision,
    /// `Some`: this item is the session-recording chunks of the segment's connection and day
    /// (their hashes), not its sealed fields.
    pub chunks: Option<Vec<String>>,
}

/// What a retention run does, segment by segment, at `now_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPlan {
    pub now_us: i64,
    pub items: Vec<PlanItem>,
}

impl RetentionPlan {
    /// The segments to delete.
    pub fn deletions(&self) -> impl Iterator<Item = &PlanItem> {
        self.items
            .iter()
            .filter(|i| matches!(i.decision, Decision::Delete { .. }))
    }
}

fn covers(rule: &RetentionRule, connection: &str) -> bool {
    rule.connections.iter().any(|c| c == "*" || c == connection)
}

/// Decides one segment.
pub fn decide(rules: &[RetentionRule], segment: &Segment, now_us: i64) -> Decision {
    if segment.deleted {
        return Decision::AlreadyDeleted;
    }
    let Some(day) = day_number(&segment.day) else {
        return Decision::Keep {
            why: format!("its day {:?} is not a date", segment.day),
        };
    };
    let end = (day + 1) * DAY_US;
    let matching: Vec<&RetentionRule> = rules
        .iter()
        .filter(|r| covers(r, &segment.connection))
        .collect();
    if matching.is_empty() {
        return Decision::Keep {
            why: "no retention rule covers its connection".into(),
        };
    }
    if let Some(r) = matching.iter().find(|r| r.legal_hold) {
        return Decision::Keep {
            why: format!("legal hold (rule {})", r.name),
        };
    }
    // Whole days since the segment's day ended.
    let ended_days = if now_us >= end {
        ((now_us - end) / DAY_US) as u64
    } else {
        return Decision::Keep {
            why: "its day has not ended".into(),
        };
    };
    let min = matching.iter().map(|r| r.min_age_days).max().unwrap_or(0);
    if ended_days < min {
        return Decision::Keep {
            why: format!("younger than the minimum of {min} days ({ended_days} days old)"),
        };
    }
    let due = matching
        .iter()
        .filter_map(|r| r.max_age_days.map(|m| (r, m)))
        .filter(|(_, m)| ended_days >= *m)
        .min_by_key(|(_, m)| *m);
    match due {
        Some((r, m)) => Decision::Delete {
            rule: r.name.clone(),
            age_days: ended_days,
            max_age_days: m,
        },
        None => Decision::Keep {
            why: format!("within its maximum age ({ended_days} days old)"),
        },
    }
}

/// The plan for the ledger `reader` reads, under `rules`, at `now_us`.
pub fn plan(
    reader: &LedgerReader,
    rules: &[RetentionRule],
    now_us: i64,
) -> Result<RetentionPlan, LedgerError> {
    let ranges = reader.segment_ranges()?;
    let mut items: Vec<PlanItem> = reader
        .segments()?
        .into_iter()
        .map(|segment| PlanItem {
            range: ranges.get(&segment.segment).copied(),
            decision: decide(rules, &segment, now_us),
            segment,
            chunks: None,
        })
        .collect();
    items.extend(recording_items(reader, rules, now_us)?);
    Ok(RetentionPlan { now_us, items })
}

/// The recordings of each connection and day, from the `recording_chunk` events, with what
/// the rules decide for them (the same rules as for sealed fields).
fn recording_items(
    reader: &LedgerReader,
    rules: &[RetentionRule],
    now_us: i64,
) -> Result<Vec<PlanItem>, LedgerError> {
    let mut deleted = std::collections::HashSet::new();
    for ev in reader.of_kind("retention_deleted")? {
        if let Ok(EventData::RetentionDeleted { segment, what, .. }) = ev.parse() {
            if what == "recordings" {
                deleted.insert(segment);
            }
        }
    }
    let mut groups: std::collections::BTreeMap<String, PlanItem> = Default::default();
    for ev in reader.of_kind("recording_chunk")? {
        let Ok(EventData::RecordingChunk {
            connection,
            hash,
            error,
            ..
        }) = ev.parse()
        else {
            continue;
        };
        let day = crate::seal::day_of(ev.ts_us);
        let name = format!("{connection}/{day}");
        let item = groups.entry(name.clone()).or_insert_with(|| PlanItem {
            segment: Segment {
                segment: name,
                connection,
                day,
                deleted: false,
            },
            range: Some((ev.seq, ev.seq, 0)),
            decision: Decision::AlreadyDeleted,
            chunks: Some(Vec::new()),
        });
        if let Some((_, last, n)) = item.range.as_mut() {
            *last = ev.seq;
            *n += 1;
        }
        if error.is_none() {
            item.chunks.get_or_insert_with(Vec::new).push(hash);
        }
    }
    Ok(groups
        .into_values()
        .map(|mut item| {
            item.segment.deleted = deleted.contains(&item.segment.segment);
            item.decision = decide(rules, &item.segment, now_us);
            item
        })
        .collect())
}

impl Ledger {
    /// Carries out a plan's deletions: for each, appends a `retention_deleted` event (and
    /// waits until it is recorded), then destroys the segment's key. Returns the seqs of the
    /// deletion events. `by` names who ran it.
    ///
    /// Recording items delete their chunks from `recordings` (after their event is recorded);
    /// without a store they fail.
    pub async fn apply_retention(
        &self,
        plan: &RetentionPlan,
        by: &str,
        recordings: Option<&crate::recording::BlobStore>,
    ) -> Result<Vec<u64>, LedgerError> {
        let mut done = Vec::new();
        for item in plan.deletions() {
            let Decision::Delete {
                rule,
                age_days,
                max_age_days,
            } = &item.decision
            else {
                continue;
            };
            // A recordings item needs its store before anything is recorded as deleted.
            let store = match (&item.chunks, recordings) {
                (Some(_), None) => {
                    return Err(LedgerError::Recording {
                        store: "(none)".into(),
                        detail: format!(
                            "retention would delete the recordings of {}, but no recordings \
                             store is configured: add [recordings] as the gateway had it",
                            item.segment.segment
                        ),
                    })
                }
                (_, store) => store,
            };
            let (first_seq, last_seq, events) = item.range.unwrap_or((0, 0, 0));
            let seq = self
                .append(vec![NewEvent::new(
                    "",
                    EventData::RetentionDeleted {
                        rule: rule.clone(),
                        segment: item.segment.segment.clone(),
                        connection: item.segment.connection.clone(),
                        day: item.segment.day.clone(),
                        first_seq,
                        last_seq,
                        events,
                        age_days: *age_days,
                        max_age_days: *max_age_days,
                        by: by.to_string(),
                        what: if item.chunks.is_some() {
                            "recordings".into()
                        } else {
                            String::new()
                        },
                    },
                )])
                .await?;
            // The record of the deletion must outlive a power loss before anything goes.
            self.sync()?;
            match &item.chunks {
                None => self.delete_segment_key(&item.segment.segment, rule)?,
                Some(hashes) => {
                    if let Some(store) = store {
                        for h in hashes {
                            store.delete(h).await?;
                        }
                    }
                }
            }
            done.push(seq);
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, conns: &[&str], max: Option<u64>, min: u64, hold: bool) -> RetentionRule {
        RetentionRule {
            name: name.into(),
            connections: conns.iter().map(|s| s.to_string()).collect(),
            max_age_days: max,
            min_age_days: min,
            legal_hold: hold,
        }
    }

    fn seg(conn: &str, day: &str) -> Segment {
        Segment {
            segment: format!("{conn}/{day}"),
            connection: conn.into(),
            day: day.into(),
            deleted: false,
        }
    }

    /// 2026-12-02 00:00 UTC plus `h` hours.
    fn at(h: i64) -> i64 {
        (day_number("2026-12-02").unwrap_or(0) * 24 + h) * 3_600_000_000
    }

    #[test]
    fn ages_limits_and_holds() {
        let prod = rule("prod", &["orders"], Some(30), 7, false);
        let s = seg("orders", "2026-11-01"); // ended 2026-11-02 00:00: 30 days before at(0)
        assert!(matches!(
            decide(std::slice::from_ref(&prod), &s, at(0)),
            Decision::Delete { age_days: 30, .. }
        ));
        assert!(matches!(
            decide(std::slice::from_ref(&prod), &s, at(-1)),
            Decision::Keep { .. }
        ));
        // Another connection: no rule.
        assert!(matches!(
            decide(std::slice::from_ref(&prod), &seg("hr", "2020-01-01"), at(0)),
            Decision::Keep { why } if why.contains("no retention rule")
        ));
        // A hold anywhere wins.
        let hold = rule("litigation", &["*"], None, 0, true);
        assert!(matches!(
            decide(&[prod.clone(), hold], &s, at(0)),
            Decision::Keep { why } if why.contains("legal hold")
        ));
        // Every matching rule's minimum counts.
        let keep_long = rule("sox", &["*"], None, 365, false);
        assert!(matches!(
            decide(&[prod.clone(), keep_long], &s, at(0)),
            Decision::Keep { why } if why.contains("minimum of 365")
        ));
        // Today is never deleted, even with max 0.
        let zero = rule("zero", &["*"], Some(0), 0, false);
        assert!(matches!(
            decide(
                std::slice::from_ref(&zero),
                &seg("orders", "2026-12-02"),
                at(23)
            ),
            Decision::Keep { .. }
        ));
        assert!(matches!(
            decide(&[zero], &seg("orders", "2026-12-01"), at(0)),
            Decision::Delete { .. }
        ));
        let mut gone = s.clone();
        gone.deleted = true;
        assert_eq!(decide(&[prod], &gone, at(0)), Decision::AlreadyDeleted);
    }
}
