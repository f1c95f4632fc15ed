//! Signed checkpoints: the ledger's tree size and Merkle root, signed with Ed25519, in the
//! C2SP `tlog-checkpoint` / `signed-note` text format.
//!
//! A checkpoint commits to every event up to its size (see [`crate::merkle`]). The gateway
//! writes one every few seconds or events into the ledger's `checkpoints` table and, when
//! configured, into a second place (a folder on other storage): whoever later deletes the
//! newest events, or rewrites the ledger and recomputes every hash, cannot produce events
//! that match a checkpoint signed before, without the signing key.
//!
//! # Format
//!
//! ```text
//! portcullis/db-gw-1                                    origin (the log's name)
//! 1200                                                  tree size = events covered (seq 1..=1200)
//! 3tJK3Ygq/0x8XzCh4UjR7cS0D/ZK8J0w1aG7pBW+Kbw=          root, standard base64
//!                                                       blank line
//! — portcullis/db-gw-1 Az3grlgt…                        signature line(s)
//! ```
//!
//! The signature line is an em dash (U+2014), a space, the key name, a space and
//! `base64(key id (4 bytes) ‖ Ed25519 signature (64 bytes))`; the signature covers the text
//! above the blank line, its final newline included. Key id = the first 4 bytes of
//! `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)`.
//!
//! Keys are text too, in the same encoding as Go's `golang.org/x/mod/sumdb/note`, so the
//! checkpoints can be checked with that ecosystem's tools:
//! * signing key (the key file, mode 0600): `PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 ‖ seed)>`
//! * verifier key (give it to the auditor): `<name>+<key id hex>+<base64(0x01 ‖ public key)>`

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::LedgerError;
use crate::merkle::Hash;

/// Algorithm byte of Ed25519 keys in signed notes.
const ALG_ED25519: u8 = 0x01;

/// The signature line prefix: U+2014 EM DASH and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// What a checkpoint says: the log's origin, how many events it covers and their root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The signed part of the note: origin, size and root, one per line.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses the body of a note (the text above the blank line, with its final newline).
    fn parse_body(body: &str) -> Result<Checkpoint, String> {
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|l| !l.is_empty());
        let size = lines.next();
        let root = lines.next();
        let (Some(origin), Some(size), Some(root)) = (origin, size, root) else {
            return Err("a checkpoint has an origin, a tree size and a root, one per line".into());
        };
        let size = size
            .parse::<u64>()
            .ok()
            .filter(|_| !size.starts_with('+') && (size == "0" || !size.starts_with('0')))
            .ok_or_else(|| format!("tree size {size:?} is not a decimal number"))?;
        let root = B64
            .decode(root)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| format!("root {root:?} is not a base64 SHA-256 hash"))?;
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        })
    }
}

/// Key id of an Ed25519 key in signed notes.
fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0x0a, ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// `<name>+<key id hex>+<base64(0x01 ‖ key bytes)>`: the shared shape of both key texts.
fn key_text(name: &str, id: &[u8; 4], key: &[u8; 32]) -> String {
    let mut raw = vec![ALG_ED25519];
    raw.extend_from_slice(key);
    format!("{name}+{}+{}", crate::chain::to_hex(id), B64.encode(raw))
}

/// A key name must be non-empty, without spaces or `+` (signed-note rules).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// The gateway's checkpoint signing key.
pub struct CheckpointSigner {
    name: String,
    key: SigningKey,
    id: [u8; 4],
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("name", &self.name)
            .field("key_id", &crate::chain::to_hex(&self.id))
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// A signer from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, String> {
        if !valid_name(name) {
            return Err(format!(
                "checkpoint origin {name:?} is not a valid key name: it must be non-empty and \
                 contain no spaces and no '+'"
            ));
        }
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(CheckpointSigner {
            name: name.to_string(),
            key,
            id,
        })
    }

    /// Loads the signing key at `path`, or creates it (mode 0600, with `<path>.pub` holding
    /// the verifier key) if there is no file. A key file made for another origin is refused:
    /// checkpoints under a new name would not continue the old ones.
    ///
    /// `origin` names the log; `None` keeps the name of an existing key, or makes a new key
    /// named `portcullis/<hostname>`.
    pub fn load_or_create(path: &Path, origin: Option<&str>) -> Result<Self, LedgerError> {
        let key_err = |detail: String| LedgerError::CheckpointKey {
            path: path.to_path_buf(),
            detail,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let signer = Self::parse(text.trim()).map_err(key_err)?;
                let Some(origin) = origin.filter(|o| *o != signer.name) else {
                    return Ok(signer);
                };
                Err(key_err(format!(
                    "the key is for origin {:?} but the configuration says {origin:?}; set \
                     store.checkpoints.origin back, or move the key file away to start a new \
                     log name",
                    signer.name
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom(&mut seed).map_err(|e| key_err(format!("no randomness: {e}")))?;
                let name = origin.map_or_else(default_origin, str::to_string);
                let signer = Self::from_seed(&name, seed).map_err(key_err)?;
                signer.write(path).map_err(|e| {
                    key_err(format!(
                        "could not write it: {e}; make its folder writable for the gateway"
                    ))
                })?;
                tracing::info!(path = %path.display(), vkey = %signer.verifier().to_vkey(), "created the ledger checkpoint signing key");
                Ok(signer)
            }
            Err(e) => Err(key_err(format!("could not read it: {e}"))),
        }
    }

    fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        writeln!(f, "{}", self.to_skey())?;
        f.sync_all()?;
        std::fs::write(pub_path(path), format!("{}\n", self.verifier().to_vkey()))
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+<base64(0x01 ‖ seed)>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || "not a signing key (expected PRIVATE+KEY+<name>+<id>+<key>)".to_string();
        let rest = text.strip_prefix("PRIVATE+KEY+").ok_or_else(bad)?;
        // The name has no '+' and the id is hex; the base64 key may contain '+'.
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let raw = B64.decode(key).map_err(|_| bad())?;
        let seed = match raw.split_first() {
            Some((&ALG_ED25519, seed)) => <[u8; 32]>::try_from(seed).map_err(|_| bad())?,
            _ => return Err("not an Ed25519 signing key".into()),
        };
        let signer = Self::from_seed(name, seed)?;
        if crate::chain::to_hex(&signer.id) != id {
            return Err(format!(
                "key id {id} does not match the key (it is {}): the file was altered",
                crate::chain::to_hex(&signer.id)
            ));
        }
        Ok(signer)
    }

    /// The key in its file form.
    pub fn to_skey(&self) -> String {
        format!(
            "PRIVATE+KEY+{}",
            key_text(&self.name, &self.id, self.key.as_bytes())
        )
    }

    /// The key's name (the origin of its checkpoints).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public half.
    pub fn verifier(&self) -> CheckpointVerifier {
        CheckpointVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs a checkpoint of `size` events with `root` under this key's name as origin, and
    /// returns the whole note.
    pub fn sign(&self, size: u64, root: Hash) -> String {
        let body = Checkpoint {
            origin: self.name.clone(),
            size,
            root,
        }
        .body();
        let sig = self.key.sign(body.as_bytes());
        let mut blob = self.id.to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        format!("{body}\n{SIG_PREFIX}{} {}\n", self.name, B64.encode(blob))
    }
}

/// The file in a mirror folder that holds the latest checkpoint.
pub fn mirror_file(folder: &Path) -> PathBuf {
    folder.join("checkpoint")
}

/// `<key file>.pub`: where the verifier key is written next to a new signing key.
pub fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// A public key checkpoints are verified with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl CheckpointVerifier {
    /// Parses a verifier key, `<name>+<key id hex>+<base64(0x01 ‖ public key)>`.
    pub fn parse(vkey: &str) -> Result<Self, String> {
        let vkey = vkey.trim();
        let bad = || {
            format!(
                "{vkey:?} is not a verifier key (expected <name>+<key id>+<key>, as in the \
                 gateway's <key file>.pub)"
            )
        };
        // The name has no '+' and the id is hex; the base64 key may contain '+'.
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if !valid_name(name) {
            return Err(bad());
        }
        let raw = B64.decode(key).map_err(|_| bad())?;
        let public = match raw.split_first() {
            Some((&ALG_ED25519, k)) => <[u8; 32]>::try_from(k).map_err(|_| bad())?,
            _ => return Err(format!("{vkey:?} is not an Ed25519 verifier key")),
        };
        let key = VerifyingKey::from_bytes(&public).map_err(|_| bad())?;
        let computed = key_id(name, &public);
        if crate::chain::to_hex(&computed) != id {
            return Err(format!(
                "verifier key {vkey:?}: key id {id} does not match the key (it is {})",
                crate::chain::to_hex(&computed)
            ));
        }
        Ok(CheckpointVerifier {
            name: name.to_string(),
            id: computed,
            key,
        })
    }

    /// The key in its text form.
    pub fn to_vkey(&self) -> String {
        key_text(&self.name, &self.id, self.key.as_bytes())
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks a note: one of its signature lines must be this key's, and valid. Returns what
    /// the note says, or why it is not acceptable.
    pub fn open(&self, note: &str) -> Result<Checkpoint, String> {
        let (body, sigs) = split_note(note)?;
        let mut mine = sigs
            .iter()
            .filter(|s| s.name == self.name && s.id == self.id);
        let Some(sig) = mine.next() else {
            let names: Vec<&str> = sigs.iter().map(|s| s.name.as_str()).collect();
            return Err(format!(
                "not signed by key {} (signed by: {})",
                self.to_vkey(),
                names.join(", ")
            ));
        };
        let signature = Signature::from_bytes(&sig.signature);
        self.key
            .verify(body.as_bytes(), &signature)
            .map_err(|_| "the signature does not match the text: the checkpoint was altered, or signed by another key with the same name".to_string())?;
        let cp = Checkpoint::parse_body(body)?;
        if cp.origin != self.name {
            return Err(format!(
                "origin {:?} is not the key's name {:?}",
                cp.origin, self.name
            ));
        }
        Ok(cp)
    }
}

struct NoteSignature {
    name: String,
    id: [u8; 4],
    signature: [u8; 64],
}

/// Splits a note into its signed text and its signature lines.
fn split_note(note: &str) -> Result<(&str, Vec<NoteSignature>), String> {
    if note.len() > 1 << 20 {
        return Err("a checkpoint note is larger than 1 MiB".into());
    }
    let Some(at) = note.rfind("\n\n") else {
        return Err("not a signed note: no blank line before the signatures".into());
    };
    let body = &note[..at + 1];
    let sig_text = &note[at + 2..];
    let mut sigs = Vec::new();
    for line in sig_text.split_terminator('\n') {
        let bad = || format!("malformed signature line {line:?}");
        let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(bad)?;
        let (name, b64) = rest.split_once(' ').ok_or_else(bad)?;
        let raw = B64.decode(b64).map_err(|_| bad())?;
        if raw.len() != 68 {
            continue; // another algorithm's signature: not ours to judge
        }
        let mut id = [0u8; 4];
        id.copy_from_slice(&raw[..4]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&raw[4..]);
        sigs.push(NoteSignature {
            name: name.to_string(),
            id,
            signature,
        });
    }
    if sigs.is_empty() && !sig_text.ends_with('\n') {
        return Err("not a signed note: it does not end with a newline".into());
    }
    if sigs.is_empty() {
        return Err("the note has no Ed25519 signature".into());
    }
    Ok((body, sigs))
}

/// Reads what a note claims without checking its signature (for error messages only).
pub fn peek(note: &str) -> Option<Checkpoint> {
    let (body, _) = split_note(note).ok()?;
    Checkpoint::parse_body(body).ok()
}

/// `portcullis/<hostname>`: the origin of a new key when none is configured.
pub fn default_origin() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let host: String = if ok {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end])
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '+')
            .collect()
    } else {
        String::new()
    };
    if host.is_empty() {
        "portcullis/ledger".to_string()
    } else {
        format!("portcullis/{host}")
    }
}

/// Fills `buf` from the operating system's random source.
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> CheckpointSigner {
        CheckpointSigner::from_seed("example.com/log", [7u8; 32]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn sign_and_open() {
        let s = signer();
        let note = s.sign(42, [3u8; 32]);
        let lines: Vec<&str> = note.lines().collect();
        assert_eq!(lines[0], "example.com/log");
        assert_eq!(lines[1], "42");
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("\u{2014} example.com/log "));
        let cp = s.verifier().open(&note).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((cp.size, cp.root), (42, [3u8; 32]));
        assert_eq!(peek(&note), Some(cp));
    }

    #[test]
    fn key_text_round_trips() {
        let s = signer();
        let back = CheckpointSigner::parse(&s.to_skey()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.to_skey(), s.to_skey());
        let v =
            CheckpointVerifier::parse(&s.verifier().to_vkey()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v, s.verifier());
        // A changed key id is noticed.
        let vkey = s.verifier().to_vkey();
        let parts: Vec<&str> = vkey.splitn(3, '+').collect();
        let forged = format!("{}+00000000+{}", parts[0], parts[2]);
        assert!(CheckpointVerifier::parse(&forged).is_err());
    }

    #[test]
    fn tampering_is_refused() {
        let s = signer();
        let v = s.verifier();
        let note = s.sign(42, [3u8; 32]);
        let bigger = note.replacen("\n42\n", "\n43\n", 1);
        assert!(v.open(&bigger).unwrap_err().contains("does not match"));
        let other = CheckpointSigner::from_seed("example.com/log", [8u8; 32])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(other
            .verifier()
            .open(&note)
            .unwrap_err()
            .contains("not signed by"));
        assert!(v.open("example.com/log\n42\n").is_err());
        assert!(v.open(&note.replace('\u{2014}', "-")).is_err());
        assert!(CheckpointSigner::from_seed("has space", [1; 32]).is_err());
    }

    /// The layout of a signed note, fixed against an independent computation of the key id.
    #[test]
    fn key_id_is_sha256_of_name_newline_alg_key() {
        let s = signer();
        let public = s.key.verifying_key().to_bytes();
        let mut m = b"example.com/log\n\x01".to_vec();
        m.extend_from_slice(&public);
        let d = Sha256::digest(&m);
        assert_eq!(s.id, [d[0], d[1], d[2], d[3]]);
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("keys/cp.key");
        let a = CheckpointSigner::load_or_create(&path, Some("gw/one"))
            .unwrap_or_else(|e| panic!("{e}"));
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        let b = CheckpointSigner::load_or_create(&path, Some("gw/one"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.to_skey(), b.to_skey());
        let vkey = std::fs::read_to_string(pub_path(&path)).unwrap_or_default();
        assert_eq!(vkey.trim(), a.verifier().to_vkey());
        let c = CheckpointSigner::load_or_create(&path, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.name(), "gw/one");
        let e = CheckpointSigner::load_or_create(&path, Some("gw/two")).unwrap_err();
        assert!(e.to_string().contains("gw/one"), "{e}");
    }
}
