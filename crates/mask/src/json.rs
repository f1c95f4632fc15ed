//! Column rules inside JSON values: `SELECT to_jsonb(c) FROM customers c` carries the same
//! columns as `SELECT * FROM customers`, under their names as object keys, so a value whose
//! key names a ruled column is masked by that rule.
//!
//! A small byte-level JSON walker finds those values without building a document: the rest
//! of the text, its key order and its formatting stay exactly as they came.

use portcullis_core::config::MaskStrategy;

/// Column rules that apply, by key, inside the JSON values of one result.
#[derive(Debug, Clone, Default)]
pub struct JsonKeyRules(pub(crate) Vec<(String, MaskStrategy)>);

impl JsonKeyRules {
    fn rule(&self, key: &[u8]) -> Option<MaskStrategy> {
        self.0
            .iter()
            .find(|(k, _)| k.as_bytes().eq_ignore_ascii_case(key))
            .map(|(_, s)| *s)
    }
}

/// One value to replace: its byte range and the rule of its key.
pub(crate) struct KeyHit {
    pub start: usize,
    pub end: usize,
    pub strategy: MaskStrategy,
}

/// Deeper than this, the walker gives up (the value is then masked by the detectors only).
const MAX_DEPTH: usize = 256;

/// The values of `doc` whose object key has a rule, outermost first, not overlapping; `None`
/// if `doc` is not JSON the walker can read.
pub(crate) fn key_hits(doc: &[u8], rules: &JsonKeyRules) -> Option<Vec<KeyHit>> {
    let mut w = Walker {
        b: doc,
        i: 0,
        rules,
        hits: Vec::new(),
    };
    w.value(0)?;
    w.ws();
    (w.i == doc.len()).then_some(w.hits)
}

struct Walker<'a> {
    b: &'a [u8],
    i: usize,
    rules: &'a JsonKeyRules,
    hits: Vec<KeyHit>,
}

impl Walker<'_> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    /// A string starting at `self.i`; returns its contents' range (escapes left as they are).
    fn string(&mut self) -> Option<(usize, usize)> {
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i + 1;
        let mut j = start;
        loop {
            match self.b.get(j)? {
                b'"' => break,
                b'\\' => j += 2,
                _ => j += 1,
            }
        }
        self.i = j + 1;
        Some((start, j))
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match *self.b.get(self.i)? {
            b'{' => {
                self.i += 1;
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    let (ks, ke) = self.string()?;
                    self.eat(b':')?;
                    self.ws();
                    let start = self.i;
                    let rule = self.rules.rule(&self.b[ks..ke]);
                    let before = self.hits.len();
                    self.value(depth + 1)?;
                    if let Some(strategy) = rule {
                        // The outer value is replaced whole: drop what was found inside it.
                        self.hits.truncate(before);
                        self.hits.push(KeyHit {
                            start,
                            end: self.i,
                            strategy,
                        });
                    }
                    self.ws();
                    match self.b.get(self.i)? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.value(depth + 1)?;
                    self.ws();
                    match self.b.get(self.i)? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            _ => {
                let start = self.i;
                while let Some(c) = self.b.get(self.i) {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> JsonKeyRules {
        JsonKeyRules(vec![
            ("full_name".into(), MaskStrategy::Redact),
            ("phone".into(), MaskStrategy::Last4),
        ])
    }

    fn spans(doc: &str) -> Option<Vec<&str>> {
        key_hits(doc.as_bytes(), &rules()).map(|h| h.iter().map(|k| &doc[k.start..k.end]).collect())
    }

    #[test]
    fn finds_ruled_keys_at_any_depth() {
        assert_eq!(
            spans(r#"{"id": 1, "full_name": "Zoë \"Z\" Müller", "x": [{"Phone": 12345}]}"#),
            Some(vec![r#""Zoë \"Z\" Müller""#, "12345"])
        );
        assert_eq!(
            spans(r#"{"full_name": {"phone": "1"}, "a": "full_name"}"#),
            Some(vec![r#"{"phone": "1"}"#]),
            "outer wins; a value that looks like a key is not one"
        );
        assert_eq!(spans("[]"), Some(vec![]));
        assert_eq!(spans(r#""full_name""#), Some(vec![]));
    }

    #[test]
    fn unreadable_json_gives_none() {
        for bad in [
            r#"{"full_name": "x""#,
            r#"{"full_name" "x"}"#,
            "[1,",
            "",
            r#"{"a":1} tail"#,
        ] {
            assert!(spans(bad).is_none(), "{bad}");
        }
        let deep = "[".repeat(10_000);
        assert!(spans(&deep).is_none(), "no stack overflow");
    }
}
