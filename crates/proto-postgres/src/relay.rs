//! The relay: a full-duplex loop between one client and its target session.
//!
//! Where a Postgres statement gets recorded: [`Relay::on_client_data`] frames what the client
//! sent, turns every simple Query, extended-protocol Execute and FunctionCall into a ledger
//! `statement` event, waits until the ledger has taken them (durable per the configured
//! mode), and only then forwards the bytes. If the ledger refuses, the statements are not
//! forwarded (fail closed) and the client gets an error in protocol order.
//!
//! [`Relay::on_server_data`] frames what the target answers, matches completions, errors and
//! ReadyForQuery to the pending statements in order, and writes `result` events. DataRow and
//! CopyData bodies are never parsed: only their 5-byte headers are read, and they are streamed
//! without buffering whole messages.

use crate::cancel::CancelGuard;
use crate::error::PgError;
use crate::server::{ledger_refusal, PROTOCOL};
use crate::stream::Stream;
use crate::upstream::Upstream;
use crate::wire::{self, ErrorFields, Reader};
use bytes::BytesMut;
use portcullis_core::{EventData, NewEvent, Outcome, ParamValue, Principal};
use portcullis_ledger::Ledger;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Bound parameter values longer than this are recorded truncated, with their full length.
const MAX_RECORDED_PARAM: usize = 64 * 1024;
/// Largest message the target may send that the relay buffers whole (everything but DataRow
/// and CopyData, which are streamed).
const MAX_BUFFERED_SERVER_MESSAGE: usize = 1 << 30;

pub struct SessionInfo {
    pub session_id: String,
    pub principal: Principal,
    pub client_addr: String,
    pub connection: String,
    pub started: Instant,
}

struct Prepared {
    sql: std::sync::Arc<str>,
    param_types: Vec<u32>,
}

struct Portal {
    statement: String,
    sql: std::sync::Arc<str>,
    params: Vec<ParamValue>,
}

/// What the relay waits for from the target, in protocol order.
enum Pending {
    Query {
        seq: u64,
        start: Instant,
        tags: Vec<String>,
        rows: u64,
        counted: u64,
        error: Option<ErrorFields>,
    },
    Execute {
        seq: u64,
        start: Instant,
        counted: u64,
    },
    Sync {
        /// An error the gateway owes the client for this segment (a refused Execute).
        inject: Option<ErrorFields>,
        saw_error: bool,
    },
    /// A refused simple query: the client gets this error and ReadyForQuery in its turn.
    Refused(ErrorFields),
}

#[derive(Clone, Copy)]
enum StmtKind {
    Query,
    Execute,
    FunctionCall,
}

enum Item {
    Forward(BytesMut),
    Sync(BytesMut),
    Statement { msg: BytesMut, kind: StmtKind },
}

struct Draft {
    text: String,
    mode: &'static str,
    statement_name: Option<String>,
    params: Vec<ParamValue>,
}

enum Flow {
    Continue,
    Terminate,
}

pub struct Relay {
    info: SessionInfo,
    client: Stream,
    server: Stream,
    cbuf: BytesMut,
    sbuf: BytesMut,
    ledger: Ledger,
    max_message: usize,
    _cancel: CancelGuard,
    // client → target
    c_stream_left: usize,
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Portal>,
    skip_until_sync: bool,
    pending_injection: Option<ErrorFields>,
    describe_fifo: VecDeque<String>,
    // target → client
    s_stream_left: usize,
    queue: VecDeque<Pending>,
    tx_status: u8,
    forwarded: u64,
}

impl Relay {
    pub fn new(
        info: SessionInfo,
        client: Stream,
        upstream: Upstream,
        ledger: Ledger,
        max_message: u32,
        cancel: CancelGuard,
    ) -> Self {
        Relay {
            info,
            client,
            server: upstream.stream,
            cbuf: BytesMut::with_capacity(16 * 1024),
            sbuf: {
                let mut b = BytesMut::with_capacity(64 * 1024);
                b.extend_from_slice(&upstream.leftover);
                b
            },
            ledger,
            max_message: max_message as usize,
            _cancel: cancel,
            c_stream_left: 0,
            statements: HashMap::new(),
            portals: HashMap::new(),
            skip_until_sync: false,
            pending_injection: None,
            describe_fifo: VecDeque::new(),
            s_stream_left: 0,
            queue: VecDeque::new(),
            tx_status: b'I',
            forwarded: 0,
        }
    }

    /// Relays until either side ends; writes the session's closing events.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let reason: String = loop {
            if !self.sbuf.is_empty() {
                if let Err(e) = self.on_server_data().await {
                    break e.to_string();
                }
            }
            tokio::select! {
                r = self.client.read_buf(&mut self.cbuf) => match r {
                    Ok(0) => break "client disconnected".into(),
                    Ok(_) => match self.on_client_data().await {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Terminate) => break "client terminated the session".into(),
                        Err(e) => {
                            if let PgError::ClientProtocol(detail) = &e {
                                self.ledger.append_detached(vec![NewEvent::new(
                                    self.info.session_id.clone(),
                                    EventData::ProtocolError {
                                        client_addr: self.info.client_addr.clone(),
                                        detail: detail.clone(),
                                    },
                                )]);
                                let mut out = BytesMut::new();
                                ErrorFields::fatal("08P01", detail.clone()).encode(&mut out);
                                let _ = self.client.write_all(&out).await;
                                let _ = self.client.flush().await;
                            }
                            break e.to_string();
                        }
                    },
                    Err(e) => break format!("client connection error: {e}"),
                },
                r = self.server.read_buf(&mut self.sbuf) => match r {
                    Ok(0) => break "the target closed the connection".into(),
                    Ok(_) => {
                        if let Err(e) = self.on_server_data().await {
                            break e.to_string();
                        }
                    }
                    Err(e) => break format!("target connection error: {e}"),
                },
                _ = shutdown.changed() => {
                    let mut out = BytesMut::new();
                    ErrorFields::fatal("57P01", "terminating connection because the gateway is shutting down").encode(&mut out);
                    let _ = self.client.write_all(&out).await;
                    let _ = self.client.flush().await;
                    break "gateway shutting down".into();
                }
            }
        };
        // Tell the target we are done, so it does not log an unexpected EOF.
        let _ = self.server.write_all(&[b'X', 0, 0, 0, 4]).await;
        let _ = self.server.flush().await;
        let _ = self.server.shutdown().await;
        let _ = self.client.shutdown().await;

        let mut events = Vec::new();
        for p in std::mem::take(&mut self.queue) {
            match p {
                Pending::Query { seq, start, .. } | Pending::Execute { seq, start, .. } => {
                    events.push(self.result(seq, Outcome::Aborted, vec![], 0, None, start))
                }
                _ => {}
            }
        }
        events.push(NewEvent::new(
            self.info.session_id.clone(),
            EventData::SessionClose {
                principal: self.info.principal.clone(),
                connection: self.info.connection.clone(),
                reason,
                duration_us: self.info.started.elapsed().as_micros() as u64,
                statements: self.forwarded,
            },
        ));
        self.ledger.append_detached(events);
    }

    fn result(
        &self,
        seq: u64,
        outcome: Outcome,
        tags: Vec<String>,
        rows: u64,
        error: Option<&ErrorFields>,
        start: Instant,
    ) -> NewEvent {
        NewEvent::new(
            self.info.session_id.clone(),
            EventData::Result {
                statement_seq: seq,
                outcome,
                tags,
                rows,
                sqlstate: error.map(|e| e.code.clone()),
                message: error.map(|e| e.message.clone()),
                duration_us: start.elapsed().as_micros() as u64,
            },
        )
    }

    /// Frames client bytes, records statements, forwards what may go.
    async fn on_client_data(&mut self) -> Result<Flow, PgError> {
        let mut items = Vec::new();
        let mut drafts: Vec<Draft> = Vec::new();
        let mut terminate = false;
        loop {
            if self.c_stream_left > 0 {
                let n = self.c_stream_left.min(self.cbuf.len());
                if n == 0 {
                    break;
                }
                items.push(Item::Forward(self.cbuf.split_to(n)));
                self.c_stream_left -= n;
                continue;
            }
            if self.cbuf.len() < 5 {
                break;
            }
            let tag = self.cbuf[0];
            let len = i32::from_be_bytes([self.cbuf[1], self.cbuf[2], self.cbuf[3], self.cbuf[4]]);
            if len < 4 || len as usize > self.max_message {
                return Err(PgError::ClientProtocol(format!(
                    "message {:?} of {len} bytes (the limit is {} bytes)",
                    tag as char, self.max_message
                )));
            }
            let total = 1 + len as usize;
            if tag == b'd' && self.cbuf.len() < total {
                // CopyData: stream it, never buffer a whole large message.
                let n = self.cbuf.len();
                items.push(Item::Forward(self.cbuf.split_to(n)));
                self.c_stream_left = total - n;
                break;
            }
            if self.cbuf.len() < total {
                self.cbuf.reserve(total - self.cbuf.len());
                break;
            }
            let msg = self.cbuf.split_to(total);
            let body = &msg[5..];
            match tag {
                b'Q' => {
                    let text = Reader::new(body)
                        .cstr()
                        .ok_or_else(|| bad("Query without a terminated string"))?;
                    drafts.push(Draft {
                        text,
                        mode: "simple",
                        statement_name: None,
                        params: vec![],
                    });
                    items.push(Item::Statement {
                        msg,
                        kind: StmtKind::Query,
                    });
                }
                b'P' => {
                    self.on_parse(body)?;
                    items.push(Item::Forward(msg));
                }
                b'B' => {
                    self.on_bind(body)?;
                    items.push(Item::Forward(msg));
                }
                b'E' => {
                    let portal = Reader::new(body)
                        .cstr()
                        .ok_or_else(|| bad("Execute without a portal name"))?;
                    let draft = match self.portals.get(&portal) {
                        Some(p) => Draft {
                            text: p.sql.to_string(),
                            mode: "extended",
                            statement_name: Some(p.statement.clone()),
                            params: p.params.clone(),
                        },
                        None => Draft {
                            text: format!("<execute of unknown portal {portal:?}>"),
                            mode: "extended",
                            statement_name: None,
                            params: vec![],
                        },
                    };
                    drafts.push(draft);
                    items.push(Item::Statement {
                        msg,
                        kind: StmtKind::Execute,
                    });
                }
                b'F' => {
                    let oid = Reader::new(body)
                        .u32()
                        .ok_or_else(|| bad("short FunctionCall"))?;
                    drafts.push(Draft {
                        text: format!("<function call: oid {oid}>"),
                        mode: "function_call",
                        statement_name: None,
                        params: vec![],
                    });
                    items.push(Item::Statement {
                        msg,
                        kind: StmtKind::FunctionCall,
                    });
                }
                b'D' => {
                    let mut r = Reader::new(body);
                    if r.u8() == Some(b'S') {
                        if let Some(name) = r.cstr() {
                            self.describe_fifo.push_back(name);
                        }
                    }
                    items.push(Item::Forward(msg));
                }
                b'C' => {
                    let mut r = Reader::new(body);
                    match (r.u8(), r.cstr()) {
                        (Some(b'S'), Some(name)) => {
                            self.statements.remove(&name);
                        }
                        (Some(b'P'), Some(name)) => {
                            self.portals.remove(&name);
                        }
                        _ => {}
                    }
                    items.push(Item::Forward(msg));
                }
                b'S' => items.push(Item::Sync(msg)),
                b'X' => {
                    terminate = true;
                    break;
                }
                _ => items.push(Item::Forward(msg)),
            }
        }

        // Record before forwarding.
        let recorded: Result<u64, String> = if drafts.is_empty() {
            Ok(0)
        } else {
            let events = drafts
                .into_iter()
                .map(|d| {
                    NewEvent::new(
                        self.info.session_id.clone(),
                        EventData::Statement {
                            principal: self.info.principal.clone(),
                            client_addr: self.info.client_addr.clone(),
                            connection: self.info.connection.clone(),
                            protocol: PROTOCOL.into(),
                            text: d.text,
                            mode: d.mode.into(),
                            statement_name: d.statement_name,
                            params: d.params,
                            verdict: "allow".into(),
                            reason: None,
                        },
                    )
                })
                .collect();
            self.ledger.append(events).await.map_err(|e| {
                tracing::error!(session = %self.info.session_id, "ledger refused statements: {e}");
                e.to_string()
            })
        };

        let mut out = BytesMut::new();
        let mut results = Vec::new();
        let mut index = 0u64;
        for item in items {
            match item {
                Item::Forward(b) => {
                    if !self.skip_until_sync {
                        out.extend_from_slice(&b)
                    }
                }
                Item::Sync(b) => {
                    self.skip_until_sync = false;
                    out.extend_from_slice(&b);
                    self.queue.push_back(Pending::Sync {
                        inject: self.pending_injection.take(),
                        saw_error: false,
                    });
                }
                Item::Statement { msg, kind } => {
                    let seq = recorded.as_ref().map(|first| first + index);
                    index += 1;
                    if self.skip_until_sync {
                        if let Ok(seq) = seq {
                            results.push(self.result(
                                seq,
                                Outcome::Skipped,
                                vec![],
                                0,
                                None,
                                Instant::now(),
                            ));
                        }
                        continue;
                    }
                    match (seq, kind) {
                        (Ok(seq), StmtKind::Execute) => {
                            out.extend_from_slice(&msg);
                            self.forwarded += 1;
                            self.queue.push_back(Pending::Execute {
                                seq,
                                start: Instant::now(),
                                counted: 0,
                            });
                        }
                        (Ok(seq), StmtKind::Query | StmtKind::FunctionCall) => {
                            out.extend_from_slice(&msg);
                            self.forwarded += 1;
                            self.queue.push_back(Pending::Query {
                                seq,
                                start: Instant::now(),
                                tags: vec![],
                                rows: 0,
                                counted: 0,
                                error: None,
                            });
                        }
                        (Err(reason), StmtKind::Execute) => {
                            self.pending_injection = Some(ledger_refusal(reason, "ERROR"));
                            self.skip_until_sync = true;
                        }
                        (Err(reason), StmtKind::Query | StmtKind::FunctionCall) => {
                            self.queue
                                .push_back(Pending::Refused(ledger_refusal(reason, "ERROR")));
                        }
                    }
                }
            }
        }
        if terminate {
            out.extend_from_slice(&[b'X', 0, 0, 0, 4]);
        }
        if !out.is_empty() {
            self.server
                .write_all(&out)
                .await
                .map_err(PgError::upstream_io)?;
            self.server.flush().await.map_err(PgError::upstream_io)?;
        }
        let mut to_client = BytesMut::new();
        self.drain_refused(&mut to_client);
        if !to_client.is_empty() {
            self.client
                .write_all(&to_client)
                .await
                .map_err(PgError::client_io)?;
            self.client.flush().await.map_err(PgError::client_io)?;
        }
        if !results.is_empty() {
            self.ledger.append_detached(results);
        }
        Ok(if terminate {
            Flow::Terminate
        } else {
            Flow::Continue
        })
    }

    fn on_parse(&mut self, body: &[u8]) -> Result<(), PgError> {
        let mut r = Reader::new(body);
        let name = r
            .cstr()
            .ok_or_else(|| bad("Parse without a statement name"))?;
        let sql = r
            .cstr()
            .ok_or_else(|| bad("Parse without a query string"))?;
        let n = r
            .i16()
            .ok_or_else(|| bad("Parse without a parameter count"))?;
        let mut param_types = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n.max(0) {
            param_types.push(
                r.u32()
                    .ok_or_else(|| bad("Parse with fewer parameter types than announced"))?,
            );
        }
        self.statements.insert(
            name,
            Prepared {
                sql: sql.into(),
                param_types,
            },
        );
        Ok(())
    }

    fn on_bind(&mut self, body: &[u8]) -> Result<(), PgError> {
        let mut r = Reader::new(body);
        let portal = r.cstr().ok_or_else(|| bad("Bind without a portal name"))?;
        let statement = r
            .cstr()
            .ok_or_else(|| bad("Bind without a statement name"))?;
        let nfmt = r
            .i16()
            .ok_or_else(|| bad("Bind without format codes"))?
            .max(0) as usize;
        let mut formats = Vec::with_capacity(nfmt);
        for _ in 0..nfmt {
            formats.push(
                r.i16()
                    .ok_or_else(|| bad("Bind with fewer format codes than announced"))?,
            );
        }
        let nparams = r
            .i16()
            .ok_or_else(|| bad("Bind without a parameter count"))?
            .max(0) as usize;
        let (sql, types): (std::sync::Arc<str>, &[u32]) = match self.statements.get(&statement) {
            Some(p) => (p.sql.clone(), &p.param_types),
            None => (
                format!("<unknown prepared statement {statement:?}>").into(),
                &[],
            ),
        };
        let mut params = Vec::with_capacity(nparams);
        for i in 0..nparams {
            let format = match formats.len() {
                0 => 0,
                1 => formats[0],
                _ => formats.get(i).copied().unwrap_or(0),
            };
            let len = r
                .i32()
                .ok_or_else(|| bad("Bind with fewer parameters than announced"))?;
            let type_oid = types.get(i).copied().unwrap_or(0);
            let value = if len < 0 {
                None
            } else {
                let raw = r
                    .bytes(len as usize)
                    .ok_or_else(|| bad("Bind parameter longer than the message"))?;
                let shown = &raw[..raw.len().min(MAX_RECORDED_PARAM)];
                let mut v = if format == 1 {
                    wire::decode_binary(type_oid, shown)
                } else {
                    String::from_utf8_lossy(shown).into_owned()
                };
                if raw.len() > MAX_RECORDED_PARAM {
                    v.push_str(&format!("…[truncated: {} bytes in all]", raw.len()));
                }
                Some(v)
            };
            params.push(ParamValue {
                type_oid,
                type_name: wire::type_name(type_oid).map(str::to_string),
                format: if format == 1 { "binary" } else { "text" }.into(),
                value,
            });
        }
        self.portals.insert(
            portal,
            Portal {
                statement,
                sql,
                params,
            },
        );
        Ok(())
    }

    /// Frames target bytes, completes pending statements, forwards to the client.
    async fn on_server_data(&mut self) -> Result<(), PgError> {
        let mut out = BytesMut::with_capacity(self.sbuf.len() + 64);
        let mut results = Vec::new();
        loop {
            if self.s_stream_left > 0 {
                let n = self.s_stream_left.min(self.sbuf.len());
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&self.sbuf.split_to(n));
                self.s_stream_left -= n;
                continue;
            }
            if self.sbuf.len() < 5 {
                break;
            }
            let tag = self.sbuf[0];
            let len = i32::from_be_bytes([self.sbuf[1], self.sbuf[2], self.sbuf[3], self.sbuf[4]]);
            if len < 4 {
                return Err(PgError::UpstreamProtocol(format!(
                    "message {:?} with length {len}",
                    tag as char
                )));
            }
            let total = 1 + len as usize;
            if tag == b'D' || tag == b'd' {
                if tag == b'D' {
                    match self.queue.front_mut() {
                        Some(Pending::Query { counted, .. })
                        | Some(Pending::Execute { counted, .. }) => *counted += 1,
                        _ => {}
                    }
                }
                let n = total.min(self.sbuf.len());
                out.extend_from_slice(&self.sbuf.split_to(n));
                self.s_stream_left = total - n;
                continue;
            }
            if total > MAX_BUFFERED_SERVER_MESSAGE {
                return Err(PgError::UpstreamProtocol(format!(
                    "message {:?} of {len} bytes",
                    tag as char
                )));
            }
            if self.sbuf.len() < total {
                self.sbuf.reserve(total - self.sbuf.len());
                break;
            }
            let msg = self.sbuf.split_to(total);
            let body = &msg[5..];
            match tag {
                b'C' | b'I' => {
                    let tag_text = if tag == b'C' {
                        Reader::new(body).cstr().unwrap_or_default()
                    } else {
                        String::new()
                    };
                    self.on_complete(tag_text, &mut results);
                }
                b's' => {
                    if let Some(Pending::Execute { .. }) = self.queue.front() {
                        if let Some(Pending::Execute {
                            seq,
                            start,
                            counted,
                        }) = self.queue.pop_front()
                        {
                            results.push(self.result(
                                seq,
                                Outcome::Suspended,
                                vec![],
                                counted,
                                None,
                                start,
                            ));
                        }
                    }
                }
                b'E' => self.on_error(ErrorFields::parse(body), &mut results),
                b'Z' => {
                    self.tx_status = body.first().copied().unwrap_or(b'I');
                    self.on_ready(&mut out, &mut results);
                    out.extend_from_slice(&msg);
                    self.drain_refused(&mut out);
                    self.describe_fifo.clear();
                    continue;
                }
                b't' => {
                    if let Some(name) = self.describe_fifo.pop_front() {
                        let mut r = Reader::new(body);
                        let n = r.i16().unwrap_or(0).max(0);
                        let types: Vec<u32> = (0..n).map_while(|_| r.u32()).collect();
                        if let Some(p) = self.statements.get_mut(&name) {
                            if p.param_types.iter().all(|&t| t == 0) {
                                p.param_types = types;
                            }
                        }
                    }
                }
                _ => {}
            }
            out.extend_from_slice(&msg);
        }
        if !out.is_empty() {
            self.client
                .write_all(&out)
                .await
                .map_err(PgError::client_io)?;
            self.client.flush().await.map_err(PgError::client_io)?;
        }
        if !results.is_empty() {
            self.ledger.append_detached(results);
        }
        Ok(())
    }

    fn on_complete(&mut self, tag: String, results: &mut Vec<NewEvent>) {
        match self.queue.front_mut() {
            Some(Pending::Query {
                tags,
                rows,
                counted,
                ..
            }) => {
                *rows += wire::tag_rows(&tag).unwrap_or(*counted);
                *counted = 0;
                tags.push(tag);
            }
            Some(Pending::Execute { .. }) => {
                if let Some(Pending::Execute {
                    seq,
                    start,
                    counted,
                }) = self.queue.pop_front()
                {
                    let rows = wire::tag_rows(&tag).unwrap_or(counted);
                    let tags = if tag.is_empty() { vec![] } else { vec![tag] };
                    results.push(self.result(seq, Outcome::Ok, tags, rows, None, start));
                }
            }
            _ => {}
        }
    }

    fn on_error(&mut self, err: ErrorFields, results: &mut Vec<NewEvent>) {
        match self.queue.front_mut() {
            Some(Pending::Query { error, .. }) => *error = Some(err),
            Some(Pending::Execute { .. }) => {
                if let Some(Pending::Execute {
                    seq,
                    start,
                    counted,
                }) = self.queue.pop_front()
                {
                    results.push(self.result(
                        seq,
                        Outcome::Error,
                        vec![],
                        counted,
                        Some(&err),
                        start,
                    ));
                }
                self.mark_segment_failed();
            }
            Some(Pending::Sync { saw_error, .. }) => *saw_error = true,
            _ => {}
        }
    }

    fn mark_segment_failed(&mut self) {
        for p in self.queue.iter_mut() {
            if let Pending::Sync { saw_error, .. } = p {
                *saw_error = true;
                return;
            }
        }
    }

    /// ReadyForQuery: closes a simple query, or everything up to the segment's Sync.
    fn on_ready(&mut self, out: &mut BytesMut, results: &mut Vec<NewEvent>) {
        if let Some(Pending::Query { .. }) = self.queue.front() {
            if let Some(Pending::Query {
                seq,
                start,
                tags,
                rows,
                error,
                ..
            }) = self.queue.pop_front()
            {
                let outcome = if error.is_some() {
                    Outcome::Error
                } else {
                    Outcome::Ok
                };
                results.push(self.result(seq, outcome, tags, rows, error.as_ref(), start));
            }
            return;
        }
        if !self.queue.iter().any(|p| matches!(p, Pending::Sync { .. })) {
            return;
        }
        while let Some(p) = self.queue.pop_front() {
            match p {
                Pending::Execute { seq, start, .. } => {
                    results.push(self.result(seq, Outcome::Skipped, vec![], 0, None, start));
                }
                Pending::Sync { inject, saw_error } => {
                    if let (Some(e), false) = (inject, saw_error) {
                        e.encode(out);
                    }
                    return;
                }
                Pending::Query { seq, start, .. } => {
                    results.push(self.result(seq, Outcome::Aborted, vec![], 0, None, start));
                }
                Pending::Refused(e) => {
                    e.encode(out);
                    wire::ready_for_query(out, self.tx_status);
                }
            }
        }
    }

    /// Answers refused simple queries that have reached the head of the queue.
    fn drain_refused(&mut self, out: &mut BytesMut) {
        while let Some(Pending::Refused(_)) = self.queue.front() {
            if let Some(Pending::Refused(e)) = self.queue.pop_front() {
                e.encode(out);
                wire::ready_for_query(out, self.tx_status);
            }
        }
    }
}

fn bad(what: &str) -> PgError {
    PgError::ClientProtocol(what.to_string())
}
