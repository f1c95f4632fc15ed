//! Session recordings: what a session's target received and (in `full` mode) what its client
//! received, as the bytes went over the wire, with timing.
//!
//! ```text
//! relay ──► Recorder (per session) ── frames in a buffer ──► chunk (every chunk_kib, and at
//!                                                             the end of the session)
//! chunk = lz4( header ‖ frame* ),  header = "PCREC1" ‖ u16 BE len ‖ session id ‖ index u64 BE
//!                                  (so no two chunks are ever the same object)
//!                          frame = direction (1: 'c' to the target, 's' to the client)
//!                                 ‖ offset_us u64 BE (since the session started)
//!                                 ‖ len u32 BE ‖ bytes
//! stored as <prefix>/chunks/<h[0..2]>/<h> where h = hex(SHA-256(chunk))
//! then a `recording_chunk` ledger event names h, its index, sizes and times
//! ```
//!
//! Content addressing makes the store's objects self-verifying and the ledger event makes the
//! recording tamper-evident: `portcullis sessions replay` fetches each chunk by the hash the
//! (verified) ledger holds and refuses one whose bytes hash differently. A chunk is written to
//! the store before its event is appended; a failed write is recorded as an event with
//! `error` (the statements themselves are in the ledger either way). At most
//! [`MAX_IN_FLIGHT`] chunks per session are being written at once: a slower store slows the
//! session down rather than filling memory.

use std::time::Instant;

pub use crate::blob::{BlobStore, S3Options};
use portcullis_core::{EventData, NewEvent};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::chain::to_hex;
use crate::Ledger;

/// Chunks of one session written concurrently at most.
pub const MAX_IN_FLIGHT: usize = 4;

/// Direction of a frame: bytes relayed to the target.
pub const TO_TARGET: u8 = b'c';
/// Direction of a frame: bytes relayed to the client.
pub const TO_CLIENT: u8 = b's';

/// One frame of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// [`TO_TARGET`] or [`TO_CLIENT`].
    pub direction: u8,
    /// Microseconds since the session started.
    pub offset_us: u64,
    pub bytes: Vec<u8>,
}

/// A decoded chunk: whose it is and its frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub session_id: String,
    pub index: u64,
    pub frames: Vec<Frame>,
}

const MAGIC: &[u8; 6] = b"PCREC1";

/// Largest decompressed chunk accepted (a chunk is `chunk_kib` plus one frame).
const MAX_RAW: usize = 1 << 30;

fn header(session_id: &str, index: u64) -> Vec<u8> {
    let id = &session_id.as_bytes()[..session_id.len().min(u16::MAX as usize)];
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&(id.len() as u16).to_be_bytes());
    h.extend_from_slice(id);
    h.extend_from_slice(&index.to_be_bytes());
    h
}

/// Decodes a stored chunk.
pub fn decode_chunk(chunk: &[u8]) -> Result<Chunk, String> {
    let size = chunk
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("the chunk is empty")?;
    if size > MAX_RAW {
        return Err(format!("the chunk claims {size} bytes uncompressed"));
    }
    let raw = lz4_flex::decompress_size_prepended(chunk)
        .map_err(|e| format!("the chunk does not decompress: {e}"))?;
    let mut b = raw.as_slice();
    let bad = || "the chunk has no valid header".to_string();
    if b.get(..6) != Some(&MAGIC[..]) || b.len() < 8 {
        return Err(bad());
    }
    let id_len = u16::from_be_bytes([b[6], b[7]]) as usize;
    b = &b[8..];
    if b.len() < id_len + 8 {
        return Err(bad());
    }
    let session_id = String::from_utf8(b[..id_len].to_vec()).map_err(|_| bad())?;
    let index = u64::from_be_bytes(b[id_len..id_len + 8].try_into().map_err(|_| bad())?);
    b = &b[id_len + 8..];
    let mut frames = Vec::new();
    while !b.is_empty() {
        if b.len() < 13 {
            return Err("a frame header is cut off".into());
        }
        let direction = b[0];
        let offset_us = u64::from_be_bytes(b[1..9].try_into().map_err(|_| "bad offset")?);
        let len = u32::from_be_bytes(b[9..13].try_into().map_err(|_| "bad length")?) as usize;
        b = &b[13..];
        if b.len() < len || !(direction == TO_TARGET || direction == TO_CLIENT) {
            return Err("a frame is cut off or has an unknown direction".into());
        }
        frames.push(Frame {
            direction,
            offset_us,
            bytes: b[..len].to_vec(),
        });
        b = &b[len..];
    }
    Ok(Chunk {
        session_id,
        index,
        frames,
    })
}

/// Records one session: collects frames, stores full chunks, appends their events.
pub struct Recorder {
    store: BlobStore,
    ledger: Ledger,
    session_id: String,
    connection: String,
    started: Instant,
    /// Record what the client received too (`full`), not only what the target received.
    responses: bool,
    chunk_bytes: usize,
    buf: Vec<u8>,
    frames: u64,
    first_us: u64,
    last_us: u64,
    index: u64,
    in_flight: std::collections::VecDeque<JoinHandle<()>>,
}

impl Recorder {
    /// A recorder for one session. `responses`: `full` mode.
    pub fn new(
        store: BlobStore,
        ledger: Ledger,
        session_id: String,
        connection: String,
        started: Instant,
        responses: bool,
        chunk_bytes: usize,
    ) -> Recorder {
        Recorder {
            store,
            ledger,
            session_id,
            connection,
            started,
            responses,
            chunk_bytes: chunk_bytes.max(1024),
            buf: Vec::new(),
            frames: 0,
            first_us: 0,
            last_us: 0,
            index: 0,
            in_flight: std::collections::VecDeque::new(),
        }
    }

    /// Bytes the target received.
    pub async fn to_target(&mut self, bytes: &[u8]) {
        self.frame(TO_TARGET, bytes).await;
    }

    /// Bytes the client received (recorded in `full` mode only).
    pub async fn to_client(&mut self, bytes: &[u8]) {
        if self.responses {
            self.frame(TO_CLIENT, bytes).await;
        }
    }

    async fn frame(&mut self, direction: u8, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let offset = self.started.elapsed().as_micros() as u64;
        if self.frames == 0 {
            self.first_us = offset;
            self.buf = header(&self.session_id, self.index);
        }
        self.last_us = offset;
        self.frames += 1;
        self.buf.push(direction);
        self.buf.extend_from_slice(&offset.to_be_bytes());
        self.buf
            .extend_from_slice(&(bytes.len().min(u32::MAX as usize) as u32).to_be_bytes());
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= self.chunk_bytes {
            self.flush().await;
        }
    }

    /// Starts storing what is buffered as one chunk (waits while [`MAX_IN_FLIGHT`] are).
    async fn flush(&mut self) {
        if self.frames == 0 {
            return;
        }
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            if let Some(h) = self.in_flight.pop_front() {
                let _ = h.await;
            }
        }
        let raw = std::mem::take(&mut self.buf);
        let (index, frames, first_us, last_us) =
            (self.index, self.frames, self.first_us, self.last_us);
        self.index += 1;
        self.frames = 0;
        let store = self.store.clone();
        let ledger = self.ledger.clone();
        let session = self.session_id.clone();
        let connection = self.connection.clone();
        self.in_flight.push_back(tokio::spawn(async move {
            let raw_bytes = raw.len() as u64;
            let chunk = lz4_flex::compress_prepend_size(&raw);
            drop(raw);
            let bytes = chunk.len() as u64;
            let provisional = to_hex(&Sha256::digest(&chunk));
            let (hash, error) = match store.put(chunk).await {
                Ok(h) => (h, None),
                Err(e) => {
                    tracing::error!(session = %session, error = %e, "a recording chunk could not be stored");
                    (provisional, Some(e.to_string()))
                }
            };
            ledger.append_detached(vec![NewEvent::new(
                session,
                EventData::RecordingChunk {
                    connection,
                    index,
                    hash,
                    bytes,
                    raw_bytes,
                    frames,
                    first_us,
                    last_us,
                    error,
                },
            )]);
        }));
    }

    /// Stores the rest and waits until every chunk of the session is stored and recorded.
    pub async fn finish(mut self) {
        self.flush().await;
        for h in std::mem::take(&mut self.in_flight) {
            let _ = h.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(frames: &[Frame]) -> Vec<u8> {
        let mut raw = header("s-1", 3);
        for f in frames {
            raw.push(f.direction);
            raw.extend_from_slice(&f.offset_us.to_be_bytes());
            raw.extend_from_slice(&(f.bytes.len() as u32).to_be_bytes());
            raw.extend_from_slice(&f.bytes);
        }
        lz4_flex::compress_prepend_size(&raw)
    }

    #[test]
    fn chunks_round_trip_and_damage_is_refused() {
        let frames = vec![
            Frame {
                direction: TO_TARGET,
                offset_us: 5,
                bytes: b"Q\0\0\0\rSELECT 1\0".to_vec(),
            },
            Frame {
                direction: TO_CLIENT,
                offset_us: 900,
                bytes: vec![b'Z', 0, 0, 0, 5, b'I'],
            },
        ];
        let chunk = encode(&frames);
        let got = decode_chunk(&chunk).unwrap();
        assert_eq!((got.session_id.as_str(), got.index), ("s-1", 3));
        assert_eq!(got.frames, frames);
        assert!(decode_chunk(&chunk[..chunk.len() - 3]).is_err());
    }

    #[tokio::test]
    async fn the_store_names_chunks_by_hash_and_refuses_altered_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(dir.path()).unwrap();
        let hash = store.put(b"chunk bytes".to_vec()).await.unwrap();
        assert_eq!(hash, to_hex(&Sha256::digest(b"chunk bytes")));
        assert_eq!(store.get(&hash).await.unwrap(), b"chunk bytes");
        let file = dir.path().join("chunks").join(&hash[..2]).join(&hash);
        std::fs::write(&file, b"other bytes").unwrap();
        let err = store.get(&hash).await.unwrap_err().to_string();
        assert!(err.contains("was altered"), "{err}");
        assert!(store.get("../../etc/passwd").await.is_err());
        store.delete(&hash).await.unwrap();
        store.delete(&hash).await.unwrap();
    }
}
