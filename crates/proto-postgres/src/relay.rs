//! The relay: a full-duplex loop between one client and its target session.
//!
//! Where a Postgres statement gets decided and recorded: [`Relay::on_client_data`] frames what
//! the client sent, asks the policy [`Gate`] about every simple Query, Parse, Execute and
//! FunctionCall, turns each Query, Execute and FunctionCall (and each refused Parse) into a
//! ledger `statement` event with the decision, waits until the ledger has taken them (durable
//! per the configured mode), and only then forwards the bytes. If the ledger refuses, nothing
//! is forwarded (fail closed): the client gets a FATAL error and the session ends, so the
//! target rolls back whatever transaction was open rather than committing half of it.
//!
//! **Refusing a statement without ending the session.** A statement policy refuses is not
//! forwarded; in its place the target gets a message that fails without effect (a Query or a
//! Parse of the text `DENIED BY PORTCULLIS POLICY`, or a FunctionCall of OID 0). The target
//! answers with an error, which the relay replaces by SQLSTATE 42501 naming the policy and
//! the reason. So the target's state is exactly what a failing statement leaves: an open
//! transaction is aborted (COMMIT rolls back, nothing half-commits), the rest of an extended
//! pipeline segment is skipped, and the session stays usable.
//!
//! [`Relay::on_server_data`] frames what the target answers, matches completions, errors and
//! ReadyForQuery to the pending statements in order, and writes `result` events. DataRow and
//! CopyData bodies are never parsed: only their 5-byte headers are read, and they are streamed
//! without buffering whole messages.
//!
//! **Which SQL an Execute runs.** The relay keeps its own view of the client's prepared
//! statements and portals, updated as Parse, Bind and Close go by and corrected by the
//! target's answers (ParseComplete, BindComplete, CloseComplete; an error undoes what the
//! target skipped). Within one pipeline segment (up to Sync) that view is exact: if an earlier
//! message fails, the target skips the Execute too. Across segments it is not, until the
//! target has answered; so a message that names a statement or portal touched by a segment
//! still in flight is held until that answer arrives. SQL-level `DEALLOCATE`/`DISCARD` empty
//! the view (an Execute of a statement the relay does not know is recorded as such, never as
//! some other SQL).

use crate::cancel::CancelGuard;
use crate::catalog::CatalogCache;
use crate::error::PgError;
use crate::masking::{self, RowShape, RowSlot, RowSource, SessionMasking};
use crate::server::{ledger_refusal, PROTOCOL};
use crate::stream::Stream;
use crate::upstream::Upstream;
use crate::wire::{self, ErrorFields, Reader};
use bytes::BytesMut;
use portcullis_core::{DecisionRecord, EventData, NewEvent, Outcome, ParamValue, Principal};
use portcullis_ledger::recording::Recorder;
use portcullis_ledger::Ledger;
use portcullis_mask::Counts;
use portcullis_policy::gate::function_call_by_oid;
use portcullis_policy::sql::{catalog, Catalog, Classification, PreparedStatements};
use portcullis_policy::{Actor, Gate, GateDecision, GrantScope, Verdict};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::watch;

/// Bound parameter values longer than this are recorded truncated, with their full length.
const MAX_RECORDED_PARAM: usize = 64 * 1024;
/// Largest message the target may send that the relay buffers whole (everything but DataRow
/// and CopyData, which are streamed).
const MAX_BUFFERED_SERVER_MESSAGE: usize = 1 << 30;
/// Statement text gathered for one ledger round; past it the rest waits for the next round,
/// so a client cannot make the relay copy one huge statement thousands of times at once.
const MAX_DRAFT_BYTES_PER_ROUND: usize = 16 * 1024 * 1024;
/// Describe-statement names remembered while their ParameterDescription is awaited.
const MAX_DESCRIBES: usize = 10_000;

pub struct SessionInfo {
    pub session_id: String,
    pub principal: Principal,
    /// The principal as policy sees it (name, token groups, chain, grant).
    pub actor: Actor,
    /// The business justification every statement carries (a task grant's reason).
    pub justification: Option<String>,
    /// When the session must end early (its task grant revoked or expired).
    pub limit: Option<SessionLimit>,
    pub client_addr: String,
    pub connection: String,
    pub started: Instant,
    /// The session recording, when the connection records (taken by the relay).
    pub recorder: Option<Recorder>,
    /// The masker and the session's profile (responses, and what the ledger keeps).
    pub masking: SessionMasking,
    /// The connection's catalog, which classification consults (functions, views).
    pub catalog: Arc<CatalogCache>,
}

/// A task grant a session runs under.
pub struct SessionLimit {
    pub grant: String,
    /// Turns true when the grant is revoked.
    pub revoked: watch::Receiver<bool>,
    /// The grant's expiry.
    pub deadline: tokio::time::Instant,
}

/// The policy view of a principal.
pub fn actor_of(p: &Principal) -> Actor {
    let id = p.identity.as_deref();
    Actor {
        name: p.agent.clone(),
        groups: id.map(|i| i.groups.clone()).unwrap_or_default(),
        auth_method: p.auth_method.clone(),
        requester: p.requester().map(str::to_string),
        chain: id
            .map(|i| i.chain.iter().map(|l| l.subject.clone()).collect())
            .unwrap_or_default(),
        grant: id.and_then(|i| i.grant.as_ref()).map(|g| GrantScope {
            id: g.id.clone(),
            actions: g
                .actions
                .iter()
                .filter_map(|a| portcullis_policy::Action::from_name(a))
                .collect(),
        }),
    }
}

/// Resolves when the session's grant is revoked or expires; never without a grant.
async fn limit_reached(limit: &mut Option<SessionLimit>) -> String {
    let Some(l) = limit else {
        return std::future::pending().await;
    };
    let revoked = async {
        let seen = l.revoked.wait_for(|revoked| *revoked).await.is_ok();
        if !seen {
            // The grant book is gone (gateway stopping): nothing more to wait for.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = revoked => format!("task grant {} was revoked", l.grant),
        _ = tokio::time::sleep_until(l.deadline) => format!("task grant {} expired", l.grant),
    }
}

#[derive(Clone)]
struct Prepared {
    sql: Arc<str>,
    param_types: Vec<u32>,
    class: Arc<Classification>,
    /// Its result columns, once a Describe of it is answered.
    rows: RowSlot,
}

#[derive(Clone)]
struct Portal {
    statement: String,
    sql: Arc<str>,
    params: Arc<Vec<ParamValue>>,
    class: Arc<Classification>,
    /// Where its result columns come from (for masking its rows).
    rows: RowSource,
}

/// A change to the relay's view of statements/portals, awaiting the target's confirmation.
struct Op {
    /// Pipeline segment of the client message (number of Syncs sent before it).
    segment: u64,
    target: OpTarget,
}

enum OpTarget {
    /// (name, value before the message, value the target has if it succeeds)
    Statement(String, Option<Prepared>, Option<Prepared>),
    Portal(String, Option<Portal>, Option<Portal>),
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
        /// Refused by policy: the target got a failing stand-in; its error becomes this one.
        denied: Option<ErrorFields>,
        /// What the statement reads (for column rules) and its current result's columns.
        class: Option<Arc<Classification>>,
        shape: Option<Arc<RowShape>>,
        masked: Counts,
    },
    /// An extended-protocol message (Parse or Execute) refused by policy: the target got a
    /// failing Parse in its place, whose error becomes this one.
    Denied {
        seq: u64,
        start: Instant,
        error: ErrorFields,
    },
    Execute {
        seq: u64,
        start: Instant,
        counted: u64,
        /// Where the portal's columns come from, and them once resolved (at the first row).
        rows: RowSource,
        shape: Option<Option<Arc<RowShape>>>,
        masked: Counts,
    },
    Sync {
        segment: u64,
    },
    /// The client ended a COPY (CopyDone/CopyFail) before the target said it was copying.
    CopyEnd,
}

impl Pending {
    /// A simple Query or FunctionCall awaiting its answer; `denied` for a refused one's stand-in.
    fn query(
        seq: u64,
        start: Instant,
        denied: Option<ErrorFields>,
        class: Option<Arc<Classification>>,
    ) -> Pending {
        Pending::Query {
            seq,
            start,
            tags: vec![],
            rows: 0,
            counted: 0,
            error: None,
            denied,
            class,
            shape: None,
            masked: Counts::default(),
        }
    }

    /// Where masking counts of this statement's response go.
    fn counts(&mut self) -> Option<&mut Counts> {
        match self {
            Pending::Query { masked, .. } | Pending::Execute { masked, .. } => Some(masked),
            _ => None,
        }
    }
}

enum Item {
    Forward(BytesMut),
    /// A Sync and the segment it closes.
    Sync(BytesMut, u64),
    Statement(BytesMut, Started),
    /// A refused statement: the stand-in to send, the error the client gets, and whether it
    /// is extended protocol (answered by the segment's Sync) or a Query/FunctionCall.
    Denied(BytesMut, ErrorFields, bool),
    CopyEnd(BytesMut),
}

struct Draft {
    text: String,
    mode: &'static str,
    statement_name: Option<String>,
    params: Vec<ParamValue>,
    verdict: Verdict,
    reason: Option<String>,
    decision: Option<Box<DecisionRecord>>,
}

/// What a forwarded statement is, for matching its answer.
enum Started {
    /// A simple Query (with what it reads) or a FunctionCall.
    Query(Option<Arc<Classification>>),
    /// An Execute, with where its portal's columns come from.
    Execute(RowSource),
}

/// A Describe awaiting its RowDescription or NoData: where the columns go, and what the
/// described statement reads.
struct Describing {
    slot: RowSlot,
    class: Option<Arc<Classification>>,
}

/// The text of the stand-in statement a refused one is replaced with: a syntax error, so the
/// target fails it before doing anything, and the name says why in the target's log.
const DENIED_SQL: &str = "DENIED BY PORTCULLIS POLICY";
/// Prepared-statement name of the stand-in Parse (never created: the Parse fails).
const DENIED_STATEMENT: &str = "portcullis_denied";

enum Flow {
    Continue,
    Terminate,
}

pub struct Relay {
    info: SessionInfo,
    client: Stream,
    /// The target connection, split so that the relay can keep reading the target's answers
    /// while a write to it is blocked (see `write_to_server`).
    server_r: ReadHalf<Stream>,
    server_w: WriteHalf<Stream>,
    cbuf: BytesMut,
    sbuf: BytesMut,
    ledger: Ledger,
    gate: Arc<Gate>,
    /// SQL-level `PREPARE`d statements, for classifying `EXECUTE`.
    sql_prepared: PreparedStatements,
    max_message: usize,
    _cancel: CancelGuard,
    // client → target
    c_stream_left: usize,
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Portal>,
    /// Changes to `statements`/`portals` the target has not confirmed yet, in message order.
    ops: VecDeque<Op>,
    /// Syncs the client has sent.
    segment: u64,
    /// Why client messages wait for the target (a name touched by a segment in flight).
    held: Option<String>,
    describe_fifo: VecDeque<String>,
    /// Describes (statement or portal) awaiting their RowDescription/NoData, in order.
    describing: VecDeque<Describing>,
    /// The target is in copy-in mode and the client has not ended it yet.
    copy_in: bool,
    /// The target is sending COPY data (`Some(true)`: in binary format).
    copy_out: Option<bool>,
    // target → client
    s_stream_left: usize,
    queue: VecDeque<Pending>,
    forwarded: u64,
    /// Statements refused (denied or held for review) in place of being forwarded.
    refused: u64,
    /// The session recording, when the connection records (`recording = "commands"|"full"`).
    recorder: Option<Recorder>,
    /// The catalog this round of client messages is classified with.
    catalog: Arc<Catalog>,
    /// A schema change was forwarded and has not been committed (or rolled back) yet: the
    /// catalog, read on another connection, cannot see it, so user functions count as unknown.
    schema_changing: bool,
}

impl Relay {
    pub fn new(
        mut info: SessionInfo,
        client: Stream,
        upstream: Upstream,
        ledger: Ledger,
        gate: Arc<Gate>,
        max_message: u32,
        cancel: CancelGuard,
    ) -> Self {
        let (server_r, server_w) = tokio::io::split(upstream.stream);
        let recorder = info.recorder.take();
        Relay {
            info,
            client,
            server_r,
            server_w,
            cbuf: BytesMut::with_capacity(16 * 1024),
            sbuf: {
                let mut b = BytesMut::with_capacity(64 * 1024);
                b.extend_from_slice(&upstream.leftover);
                b
            },
            ledger,
            gate,
            sql_prepared: PreparedStatements::default(),
            max_message: max_message as usize,
            _cancel: cancel,
            c_stream_left: 0,
            statements: HashMap::new(),
            portals: HashMap::new(),
            ops: VecDeque::new(),
            segment: 0,
            held: None,
            describe_fifo: VecDeque::new(),
            describing: VecDeque::new(),
            copy_in: false,
            copy_out: None,
            s_stream_left: 0,
            queue: VecDeque::new(),
            forwarded: 0,
            refused: 0,
            recorder,
            catalog: Arc::new(Catalog::builtin("not read yet")),
            schema_changing: false,
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
                r = self.client.read_buf(&mut self.cbuf), if self.held.is_none() => match r {
                    Ok(0) => break "client disconnected".into(),
                    Ok(_) => {
                        if let Err(reason) = self.client_round().await {
                            break reason;
                        }
                    }
                    Err(e) => break format!("client connection error: {e}"),
                },
                r = self.server_r.read_buf(&mut self.sbuf) => match r {
                    Ok(0) => break "the target closed the connection".into(),
                    Ok(_) => {
                        if let Err(e) = self.on_server_data().await {
                            break e.to_string();
                        }
                        // Messages held for the target's answer to an earlier segment.
                        if self.held.take().is_some() {
                            if let Err(reason) = self.client_round().await {
                                break reason;
                            }
                        }
                    }
                    Err(e) => break format!("target connection error: {e}"),
                },
                why = limit_reached(&mut self.info.limit) => {
                    let mut out = BytesMut::new();
                    ErrorFields::fatal("57P01", format!("terminating connection: {why}"))
                        .with_hint("ask the person who issued the grant for a new one: `portcullis grant create`")
                        .encode(&mut out);
                    let _ = self.client.write_all(&out).await;
                    let _ = self.client.flush().await;
                    break why;
                }
                _ = shutdown.changed() => {
                    let mut out = BytesMut::new();
                    ErrorFields::fatal("57P01", "terminating connection because the gateway is shutting down").encode(&mut out);
                    let _ = self.client.write_all(&out).await;
                    let _ = self.client.flush().await;
                    break "gateway shutting down".into();
                }
            }
        };
        // A schema change may have completed without the relay seeing it.
        if self.schema_changing {
            self.info.catalog.changed();
        }
        // Tell the target we are done, so it does not log an unexpected EOF.
        let _ = self.server_w.write_all(&[b'X', 0, 0, 0, 4]).await;
        let _ = self.server_w.flush().await;
        let _ = self.server_w.shutdown().await;
        let _ = self.client.shutdown().await;
        // The last chunk is stored (and its event queued) before the session's close event.
        if let Some(r) = self.recorder.take() {
            r.finish().await;
        }

        let mut events = Vec::new();
        for p in std::mem::take(&mut self.queue) {
            match p {
                Pending::Query {
                    seq, start, masked, ..
                }
                | Pending::Execute {
                    seq, start, masked, ..
                } => events.push(self.result(
                    (seq, start),
                    Outcome::Aborted,
                    vec![],
                    0,
                    None,
                    &masked,
                )),
                Pending::Denied { seq, start, .. } => events.push(self.result(
                    (seq, start),
                    Outcome::Aborted,
                    vec![],
                    0,
                    None,
                    &Counts::default(),
                )),
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
                refused: Some(self.refused),
            },
        ));
        self.ledger.append_detached(events);
    }

    /// Writes to the target while still relaying its answers. A target stops reading when it
    /// cannot write; if the relay only wrote, a large pipeline (much input, much output) would
    /// deadlock the two.
    async fn write_to_server(&mut self, mut out: &[u8]) -> Result<(), PgError> {
        while !out.is_empty() {
            tokio::select! {
                biased;
                w = self.server_w.write(out) => {
                    let n = w.map_err(PgError::upstream_io)?;
                    if n == 0 {
                        return Err(PgError::upstream_io(std::io::ErrorKind::WriteZero.into()));
                    }
                    out = &out[n..];
                }
                r = self.server_r.read_buf(&mut self.sbuf) => {
                    if r.map_err(PgError::upstream_io)? == 0 {
                        return Err(PgError::UpstreamProtocol("the target closed the connection".into()));
                    }
                    self.on_server_data().await?;
                }
            }
        }
        self.server_w.flush().await.map_err(PgError::upstream_io)
    }

    /// Processes what the client sent; on an error that ends the session, tells the client
    /// why and returns the reason for the session-close event.
    async fn client_round(&mut self) -> Result<(), String> {
        let e = match self.on_client_data().await {
            Ok(Flow::Continue) => return Ok(()),
            Ok(Flow::Terminate) => return Err("client terminated the session".into()),
            Err(e) => e,
        };
        let fatal = match &e {
            PgError::LedgerRefused(reason) => Some(ledger_refusal(reason, "FATAL")),
            PgError::ClientProtocol(detail) => {
                self.ledger.append_detached(vec![NewEvent::new(
                    self.info.session_id.clone(),
                    EventData::ProtocolError {
                        client_addr: self.info.client_addr.clone(),
                        detail: detail.clone(),
                    },
                )]);
                Some(ErrorFields::fatal("08P01", detail.clone()))
            }
            _ => None,
        };
        if let Some(fatal) = fatal {
            let mut out = BytesMut::new();
            fatal.encode(&mut out);
            let _ = self.client.write_all(&out).await;
            let _ = self.client.flush().await;
        }
        Err(e.to_string())
    }

    /// The result event of statement `seq`, started at `start`.
    fn result(
        &self,
        (seq, start): (u64, Instant),
        outcome: Outcome,
        tags: Vec<String>,
        rows: u64,
        error: Option<&ErrorFields>,
        masked: &Counts,
    ) -> NewEvent {
        let m = &self.info.masking.masker;
        let mut counts = masked.clone();
        // Error messages can quote the data (`invalid input syntax for type integer: "…"`).
        let message = error.map(|e| m.mask_record(&e.message, &mut counts).into_owned());
        NewEvent::new(
            self.info.session_id.clone(),
            EventData::Result {
                statement_seq: seq,
                outcome,
                tags,
                rows,
                sqlstate: error.map(|e| e.code.clone()),
                message,
                duration_us: start.elapsed().as_micros() as u64,
                sealed: None,
                masked: counts.by_name(m),
            },
        )
    }

    /// Frames client bytes, records statements, forwards what may go.
    async fn on_client_data(&mut self) -> Result<Flow, PgError> {
        if !self.schema_changing {
            self.catalog = self.info.catalog.get().await;
        }
        let mut items = Vec::new();
        let mut drafts: Vec<Draft> = Vec::new();
        let mut draft_bytes = 0usize;
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
            if self.cbuf.len() < 5 || draft_bytes > MAX_DRAFT_BYTES_PER_ROUND {
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
            if let Some(name) = self.must_wait(tag, &self.cbuf[5..total]) {
                self.held = Some(name);
                break;
            }
            let msg = self.cbuf.split_to(total);
            let body = &msg[5..];
            match tag {
                b'Q' => {
                    let text = Reader::new(body)
                        .cstr()
                        .ok_or_else(|| bad("Query without a terminated string"))?;
                    draft_bytes += text.len();
                    let class = self.classify(&text);
                    let gd = self.decide(&class, &text);
                    let verdict = gd.decision.verdict;
                    if verdict == Verdict::Allow {
                        self.sql_prepared.apply(&class);
                        self.note_schema_change(&class);
                        items.push(Item::Statement(msg, Started::Query(Some(class.clone()))));
                    } else {
                        let mut standin = BytesMut::new();
                        wire::put_message(&mut standin, b'Q', |b| wire::put_cstr(b, DENIED_SQL));
                        items.push(Item::Denied(standin, self.denial(&gd, &class), false));
                    }
                    drafts.push(Draft::new(text, "simple", None, vec![], &gd, &class));
                }
                b'P' => {
                    let (name, sql, class) = self.on_parse(body)?;
                    let gd = self.decide(&class, &sql);
                    if gd.decision.verdict == Verdict::Allow {
                        items.push(Item::Forward(msg));
                    } else {
                        // Refused at Parse: planning can already run functions.
                        draft_bytes += sql.len();
                        items.push(Item::Denied(denied_parse(), self.denial(&gd, &class), true));
                        drafts.push(Draft::new(
                            sql.to_string(),
                            "parse",
                            Some(name),
                            vec![],
                            &gd,
                            &class,
                        ));
                    }
                }
                b'B' => {
                    self.on_bind(body)?;
                    items.push(Item::Forward(msg));
                }
                b'E' => {
                    let portal = Reader::new(body)
                        .cstr()
                        .ok_or_else(|| bad("Execute without a portal name"))?;
                    let (text, name, params, class, rows) = match self.portals.get(&portal) {
                        Some(p) => (
                            p.sql.to_string(),
                            Some(p.statement.clone()),
                            p.params.as_ref().clone(),
                            p.class.clone(),
                            p.rows.clone(),
                        ),
                        None => {
                            let text = format!("<execute of unknown portal {portal:?}>");
                            let class = Arc::new(portcullis_policy::sql::classify(&text));
                            (text, None, vec![], class, RowSource::default())
                        }
                    };
                    // Decided again at Execute: the policies may have changed since Parse.
                    let gd = self.decide(&class, &text);
                    if gd.decision.verdict == Verdict::Allow {
                        self.note_schema_change(&class);
                        items.push(Item::Statement(msg, Started::Execute(rows)));
                    } else {
                        items.push(Item::Denied(denied_parse(), self.denial(&gd, &class), true));
                    }
                    draft_bytes += text.len();
                    drafts.push(Draft::new(text, "extended", name, params, &gd, &class));
                }
                b'F' => {
                    let oid = Reader::new(body)
                        .u32()
                        .ok_or_else(|| bad("short FunctionCall"))?;
                    let text = format!("<function call: oid {oid}>");
                    let class = function_call_by_oid(oid);
                    let gd = self.decide(&class, &text);
                    if gd.decision.verdict == Verdict::Allow {
                        items.push(Item::Statement(msg, Started::Query(None)));
                    } else {
                        let mut standin = BytesMut::new();
                        wire::put_message(&mut standin, b'F', |b| {
                            b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                        });
                        items.push(Item::Denied(standin, self.denial(&gd, &class), false));
                    }
                    drafts.push(Draft::new(text, "function_call", None, vec![], &gd, &class));
                }
                b'D' => {
                    let mut r = Reader::new(body);
                    let which = r.u8();
                    let name = r.cstr();
                    if let (Some(b'S'), Some(name)) = (which, &name) {
                        if self.describe_fifo.len() >= MAX_DESCRIBES {
                            self.describe_fifo.pop_front();
                        }
                        self.describe_fifo.push_back(name.clone());
                    }
                    // Where the RowDescription that answers it goes (kept in order even for
                    // names the relay does not know, so later answers pair up right).
                    let (slot, class) = match (which, &name) {
                        (Some(b'S'), Some(n)) => match self.statements.get(n) {
                            Some(p) => (p.rows.clone(), Some(p.class.clone())),
                            None => (RowSlot::default(), None),
                        },
                        (Some(b'P'), Some(n)) => match self.portals.get(n) {
                            Some(p) => (p.rows.portal.clone(), Some(p.class.clone())),
                            None => (RowSlot::default(), None),
                        },
                        _ => (RowSlot::default(), None),
                    };
                    if self.describing.len() >= MAX_DESCRIBES {
                        self.describing.pop_front();
                    }
                    self.describing.push_back(Describing { slot, class });
                    items.push(Item::Forward(msg));
                }
                b'C' => {
                    let mut r = Reader::new(body);
                    let segment = self.segment;
                    match (r.u8(), r.cstr()) {
                        (Some(b'S'), Some(name)) => {
                            let before = self.statements.remove(&name);
                            self.ops.push_back(Op {
                                segment,
                                target: OpTarget::Statement(name, before, None),
                            });
                        }
                        (Some(b'P'), Some(name)) => {
                            let before = self.portals.remove(&name);
                            self.ops.push_back(Op {
                                segment,
                                target: OpTarget::Portal(name, before, None),
                            });
                        }
                        _ => return Err(bad("Close of neither a statement nor a portal")),
                    }
                    items.push(Item::Forward(msg));
                }
                b'S' => {
                    items.push(Item::Sync(msg, self.segment));
                    self.segment += 1;
                }
                b'c' | b'f' => items.push(Item::CopyEnd(msg)),
                b'X' => {
                    terminate = true;
                    break;
                }
                _ => items.push(Item::Forward(msg)),
            }
        }

        // Record before forwarding. If the ledger refuses, nothing of this round goes out and
        // the session ends (the caller sends the FATAL error).
        let first = if drafts.is_empty() {
            0
        } else {
            let mut forget_statements = false;
            let masker = self.info.masking.masker.clone();
            let events = drafts
                .into_iter()
                .map(|mut d| {
                    forget_statements |= resets_prepared_statements(&d.text);
                    // The ledger never keeps a raw value: literals, parameters, reasons and
                    // the classifier's notes (a parse error quotes the text) are masked.
                    let mut counts = Counts::default();
                    if let std::borrow::Cow::Owned(t) = masker.mask_record(&d.text, &mut counts) {
                        d.text = t;
                    }
                    for p in &mut d.params {
                        if let Some(v) = &mut p.value {
                            if let std::borrow::Cow::Owned(t) = masker.mask_record(v, &mut counts) {
                                *v = t;
                            }
                        }
                    }
                    if let Some(r) = &mut d.reason {
                        if let std::borrow::Cow::Owned(t) = masker.mask_record(r, &mut counts) {
                            *r = t;
                        }
                    }
                    if let Some(dec) = &mut d.decision {
                        for n in &mut dec.notes {
                            if let std::borrow::Cow::Owned(t) = masker.mask_record(n, &mut counts) {
                                *n = t;
                            }
                        }
                    }
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
                            verdict: d.verdict.name().into(),
                            reason: d.reason,
                            decision: d.decision,
                            sealed: None,
                            masked: counts.by_name(&masker),
                        },
                    )
                })
                .collect();
            let first = self.ledger.append(events).await.map_err(|e| {
                tracing::error!(session = %self.info.session_id, "ledger refused statements: {e}");
                PgError::LedgerRefused(e.to_string())
            })?;
            if forget_statements {
                // DEALLOCATE/DISCARD may have removed statements the relay still knows: forget
                // them all, so an Execute is recorded as unknown rather than as stale SQL.
                self.statements.clear();
            }
            first
        };

        let mut out = BytesMut::new();
        let mut seq = first;
        for item in items {
            match item {
                Item::Forward(b) => out.extend_from_slice(&b),
                Item::Sync(b, segment) => {
                    out.extend_from_slice(&b);
                    // The target ignores a Sync sent during copy-in: it gets no ReadyForQuery.
                    if !self.copy_in {
                        self.queue.push_back(Pending::Sync { segment });
                    }
                }
                Item::CopyEnd(b) => {
                    out.extend_from_slice(&b);
                    if self.copy_in {
                        self.copy_in = false;
                    } else {
                        self.queue.push_back(Pending::CopyEnd);
                    }
                }
                Item::Statement(msg, started) => {
                    out.extend_from_slice(&msg);
                    self.forwarded += 1;
                    let start = Instant::now();
                    self.queue.push_back(match started {
                        Started::Execute(rows) => Pending::Execute {
                            seq,
                            start,
                            counted: 0,
                            rows,
                            shape: None,
                            masked: Counts::default(),
                        },
                        Started::Query(class) => Pending::query(seq, start, None, class),
                    });
                    seq += 1;
                }
                Item::Denied(standin, error, extended) => {
                    out.extend_from_slice(&standin);
                    self.refused += 1;
                    let start = Instant::now();
                    self.queue.push_back(if extended {
                        Pending::Denied { seq, start, error }
                    } else {
                        Pending::query(seq, start, Some(error), None)
                    });
                    seq += 1;
                }
            }
        }
        if terminate {
            out.extend_from_slice(&[b'X', 0, 0, 0, 4]);
        }
        if !out.is_empty() {
            if let Some(r) = self.recorder.as_mut() {
                // What the client typed, with every detected value blanked (same length, so
                // the recording's framing stays intact).
                let mut copy = out.to_vec();
                self.info.masking.masker.blank_in_place(&mut copy);
                r.to_target(&copy).await;
            }
            self.write_to_server(&out).await?;
        }
        Ok(if terminate {
            Flow::Terminate
        } else {
            Flow::Continue
        })
    }

    /// The classification of SQL text, with `EXECUTE` resolved against this session's
    /// SQL-prepared statements and what the target's catalog says of the functions and views
    /// it uses.
    fn classify(&self, sql: &str) -> Arc<Classification> {
        let class = self.gate.classify(sql);
        let class = if class.needs_session() {
            Arc::new(class.resolve(&self.sql_prepared))
        } else {
            class
        };
        if !self.catalog.concerns(&class) {
            return class;
        }
        Arc::new(catalog::refine(&class, &self.catalog, &|text| {
            self.gate.classify(text)
        }))
    }

    /// A statement about to be forwarded may change the schema (functions, views): until its
    /// transaction ends, user functions count as unknown; after, the catalog is read again.
    fn note_schema_change(&mut self, class: &Classification) {
        use portcullis_policy::Action as A;
        let changes = class
            .actions
            .iter()
            .any(|a| matches!(a, A::Ddl | A::Dcl | A::Admin | A::Unknown));
        if changes && !self.schema_changing {
            self.schema_changing = true;
            self.catalog = schema_in_flight(&self.catalog);
        }
    }

    fn decide(&self, class: &Classification, text: &str) -> GateDecision {
        self.gate.decide(
            &self.info.actor,
            &self.info.connection,
            class,
            text,
            self.info.justification.as_deref(),
        )
    }

    /// The error a refused statement's client gets: SQLSTATE 42501, naming policy and reason.
    fn denial(&self, gd: &GateDecision, class: &Classification) -> ErrorFields {
        let d = &gd.decision;
        let classes: Vec<&str> = class.actions.iter().map(|a| a.name()).collect();
        let (message, hint) = match d.verdict {
            Verdict::Review => (
                format!("portcullis: held for review: {}", d.reason),
                "human approval is not available in this version of portcullis, so a statement that needs review is refused; ask an operator to change the policy".to_string(),
            ),
            _ => (
                format!("portcullis: permission denied: {}", d.reason),
                format!(
                    "`portcullis policy explain --config FILE --agent {} --connection {} \"SQL\"` shows how the policies decide",
                    self.info.principal.agent, self.info.connection
                ),
            ),
        };
        let policies = if d.policies.is_empty() {
            "none matched (default deny)".to_string()
        } else {
            d.policies.join(", ")
        };
        ErrorFields::error("42501", message)
            .with_detail(format!(
                "statement classes: {}; deciding policies: {policies}; policy snapshot {}",
                classes.join(", "),
                &gd.snapshot[..gd.snapshot.len().min(16)]
            ))
            .with_hint(hint)
    }

    /// Whether a message names a statement or portal that a segment still in flight changes:
    /// then the target's answer decides which SQL it means, and the relay must wait for it.
    fn must_wait(&self, tag: u8, body: &[u8]) -> Option<String> {
        if self.ops.is_empty() {
            return None;
        }
        let mut r = Reader::new(body);
        let (portal, statement) = match tag {
            b'P' => (None, r.cstr()),
            b'B' => {
                let p = r.cstr();
                (p, r.cstr())
            }
            b'E' => (r.cstr(), None),
            b'C' | b'D' => match (r.u8(), r.cstr()) {
                (Some(b'S'), s) => (None, s),
                (Some(b'P'), p) => (p, None),
                _ => (None, None),
            },
            _ => return None,
        };
        self.ops
            .iter()
            .filter(|op| op.segment < self.segment)
            .find_map(|op| match &op.target {
                OpTarget::Statement(n, ..) if statement.as_deref() == Some(n) => {
                    Some(format!("statement {n:?}"))
                }
                OpTarget::Portal(n, ..) if portal.as_deref() == Some(n) => {
                    Some(format!("portal {n:?}"))
                }
                _ => None,
            })
    }

    /// Stages a Parse into the relay's view; returns the statement's name, SQL and class.
    fn on_parse(
        &mut self,
        body: &[u8],
    ) -> Result<(String, Arc<str>, Arc<Classification>), PgError> {
        let mut r = Reader::new(body);
        let name = r
            .cstr()
            .ok_or_else(|| bad("Parse without a statement name"))?;
        let sql = r
            .cstr()
            .ok_or_else(|| bad("Parse without a query string"))?;
        let n = r
            .i16()
            .ok_or_else(|| bad("Parse without a parameter count"))? as u16;
        let mut param_types = Vec::with_capacity(n as usize);
        for _ in 0..n {
            param_types.push(
                r.u32()
                    .ok_or_else(|| bad("Parse with fewer parameter types than announced"))?,
            );
        }
        let class = self.classify(&sql);
        let sql: Arc<str> = sql.into();
        let new = Prepared {
            sql: sql.clone(),
            param_types,
            class: class.clone(),
            rows: RowSlot::default(),
        };
        // As the target does: a named statement that exists is not replaced (error 42P05).
        let before = stage(&mut self.statements, &name, &new);
        self.ops.push_back(Op {
            segment: self.segment,
            target: OpTarget::Statement(name.clone(), before, Some(new)),
        });
        Ok((name, sql, class))
    }

    fn on_bind(&mut self, body: &[u8]) -> Result<(), PgError> {
        let mut r = Reader::new(body);
        let portal = r.cstr().ok_or_else(|| bad("Bind without a portal name"))?;
        let statement = r
            .cstr()
            .ok_or_else(|| bad("Bind without a statement name"))?;
        let nfmt = r.i16().ok_or_else(|| bad("Bind without format codes"))? as u16 as usize;
        let mut formats = Vec::with_capacity(nfmt);
        for _ in 0..nfmt {
            formats.push(
                r.i16()
                    .ok_or_else(|| bad("Bind with fewer format codes than announced"))?,
            );
        }
        let nparams =
            r.i16()
                .ok_or_else(|| bad("Bind without a parameter count"))? as u16 as usize;
        let (sql, types, class, statement_rows): (Arc<str>, &[u32], Arc<Classification>, RowSlot) =
            match self.statements.get(&statement) {
                Some(p) => (
                    p.sql.clone(),
                    &p.param_types,
                    p.class.clone(),
                    p.rows.clone(),
                ),
                None => {
                    let text = format!("<unknown prepared statement {statement:?}>");
                    let class = Arc::new(portcullis_policy::sql::classify(&text));
                    (text.into(), &[], class, RowSlot::default())
                }
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
        // The result formats the client wants (after the parameters).
        let nres = r.i16().unwrap_or(0).max(0) as usize;
        let formats: Vec<i16> = (0..nres).map_while(|_| r.i16()).collect();
        let new = Portal {
            statement,
            sql,
            params: Arc::new(params),
            class,
            rows: RowSource {
                portal: RowSlot::default(),
                statement: statement_rows,
                formats: formats.into(),
            },
        };
        // As the target does: a named portal that exists is not replaced (error 42P03).
        let before = stage(&mut self.portals, &portal, &new);
        self.ops.push_back(Op {
            segment: self.segment,
            target: OpTarget::Portal(portal, before, Some(new)),
        });
        Ok(())
    }

    /// ParseComplete / BindComplete / CloseComplete: the oldest pending change happened.
    fn confirm_op(&mut self) {
        if let Some(op) = self.ops.pop_front() {
            self.apply(op.target, false);
        }
    }

    /// A segment ended: changes the target did not confirm did not happen (an error made it
    /// skip them). Undone newest first.
    fn undo_ops_through(&mut self, segment: u64) {
        let n = self
            .ops
            .iter()
            .take_while(|op| op.segment <= segment)
            .count();
        let undone: Vec<Op> = self.ops.drain(..n).collect();
        for op in undone.into_iter().rev() {
            self.apply(op.target, true);
        }
    }

    /// Sets a statement or portal to its value after the change (or before it, to undo).
    fn apply(&mut self, target: OpTarget, undo: bool) {
        fn set<V>(map: &mut HashMap<String, V>, name: String, value: Option<V>) {
            match value {
                Some(v) => {
                    map.insert(name, v);
                }
                None => {
                    map.remove(&name);
                }
            }
        }
        match target {
            OpTarget::Statement(name, before, after) => set(
                &mut self.statements,
                name,
                if undo { before } else { after },
            ),
            OpTarget::Portal(name, before, after) => {
                set(&mut self.portals, name, if undo { before } else { after })
            }
        }
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
            let masking = self.info.masking.active();
            if (tag == b'D' || tag == b'd') && !masking {
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
            if masking {
                // Rows, COPY data and error texts are masked one message at a time.
                match tag {
                    b'D' => {
                        let replaced = self.mask_row(body)?;
                        out.extend_from_slice(replaced.as_deref().unwrap_or(&msg));
                        continue;
                    }
                    b'd' if self.copy_out == Some(true) => {
                        let e = ErrorFields::fatal(
                            "42501",
                            "portcullis: binary COPY output cannot be masked; use COPY … (FORMAT text) or (FORMAT csv)",
                        );
                        e.encode(&mut out);
                        let _ = self.client.write_all(&out).await;
                        let _ = self.client.flush().await;
                        return Err(PgError::UpstreamProtocol(
                            "binary COPY output refused: it cannot be masked".into(),
                        ));
                    }
                    b'd' => {
                        let m = self.info.masking.clone();
                        let mut counts = Counts::default();
                        let replaced = masking::copy_row(&m, body, &mut counts);
                        if let Some(c) = self.queue.front_mut().and_then(Pending::counts) {
                            c.merge(&counts);
                        }
                        out.extend_from_slice(replaced.as_deref().unwrap_or(&msg));
                        continue;
                    }
                    b'E' | b'N' => {
                        if tag == b'E' {
                            self.copy_out = None;
                        }
                        let m = self.info.masking.clone();
                        let mut counts = Counts::default();
                        if let Some(masked) = masking::error_fields(&m, tag, body, &mut counts) {
                            if let Some(c) = self.queue.front_mut().and_then(Pending::counts) {
                                c.merge(&counts);
                            }
                            if tag == b'N' {
                                out.extend_from_slice(&masked);
                                continue;
                            }
                            // An error is matched to its statement first (below), then sent
                            // masked.
                            if let Some(denial) =
                                self.on_error(ErrorFields::parse(body), &mut results)
                            {
                                denial.encode(&mut out);
                            } else {
                                out.extend_from_slice(&masked);
                            }
                            continue;
                        }
                    }
                    _ => {}
                }
            }
            match tag {
                b'T' if masking => self.on_row_description(body),
                // NoData answers a Describe.
                b'n' if masking && !matches!(self.queue.front(), Some(Pending::Query { .. })) => {
                    self.describing.pop_front();
                }
                b'H' => self.copy_out = Some(body.first() == Some(&1)),
                b'c' => self.copy_out = None,
                b'1' | b'2' | b'3' => self.confirm_op(),
                b'C' => {
                    self.copy_out = None;
                    let tag_text = Reader::new(body).cstr().unwrap_or_default();
                    self.on_complete(Some(tag_text), &mut results);
                }
                b'I' => self.on_complete(None, &mut results),
                b's' => {
                    if let Some(Pending::Execute { .. }) = self.queue.front() {
                        if let Some(Pending::Execute {
                            seq,
                            start,
                            counted,
                            masked,
                            ..
                        }) = self.queue.pop_front()
                        {
                            results.push(self.result(
                                (seq, start),
                                Outcome::Suspended,
                                vec![],
                                counted,
                                None,
                                &masked,
                            ));
                        }
                    }
                }
                b'E' => {
                    self.copy_out = None;
                    if let Some(denial) = self.on_error(ErrorFields::parse(body), &mut results) {
                        // The stand-in of a refused statement failed: the client sees why.
                        denial.encode(&mut out);
                        continue;
                    }
                }
                b'G' => self.on_copy_in(),
                b'Z' => {
                    self.copy_out = None;
                    self.on_ready(&mut results);
                    // Outside a transaction, a schema change forwarded earlier has committed
                    // (or failed): the catalog is read again. Statements still in flight may
                    // hold another, so user functions stay unknown until none is.
                    if self.schema_changing && body.first() == Some(&b'I') {
                        self.info.catalog.changed();
                        let in_flight = self
                            .queue
                            .iter()
                            .any(|p| matches!(p, Pending::Query { .. } | Pending::Execute { .. }));
                        self.schema_changing = in_flight;
                    }
                    self.describe_fifo.clear();
                    self.describing.clear();
                }
                b't' => {
                    if let Some(name) = self.describe_fifo.pop_front() {
                        let mut r = Reader::new(body);
                        let n = r.i16().unwrap_or(0) as u16;
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
            if let Some(r) = self.recorder.as_mut() {
                if self.info.masking.profile.keeps_anything() {
                    // The client may see raw values; the recording never does.
                    let mut copy = out.to_vec();
                    self.info.masking.masker.blank_in_place(&mut copy);
                    r.to_client(&copy).await;
                } else {
                    r.to_client(&out).await;
                }
            }
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

    /// A RowDescription: the columns of the running simple query's next result, or of the
    /// statement/portal the oldest unanswered Describe names.
    fn on_row_description(&mut self, body: &[u8]) {
        let profile = self.info.masking.profile.clone();
        if let Some(Pending::Query { class, shape, .. }) = self.queue.front_mut() {
            *shape = RowShape::parse(body, &profile, class.as_deref()).map(Arc::new);
            return;
        }
        if let Some(d) = self.describing.pop_front() {
            d.slot
                .set(RowShape::parse(body, &profile, d.class.as_deref()).map(Arc::new));
        }
    }

    /// A DataRow, masked for the session's profile (`None`: forward it unchanged).
    fn mask_row(&mut self, body: &[u8]) -> Result<Option<BytesMut>, PgError> {
        let m = self.info.masking.clone();
        let mut none = Counts::default();
        let (shape, counts) = match self.queue.front_mut() {
            Some(Pending::Query {
                counted,
                shape,
                masked,
                ..
            }) => {
                *counted += 1;
                (shape.clone(), masked)
            }
            Some(Pending::Execute {
                counted,
                rows,
                shape,
                masked,
                ..
            }) => {
                *counted += 1;
                let s = shape.get_or_insert_with(|| rows.resolve()).clone();
                (s, masked)
            }
            _ => (None, &mut none),
        };
        masking::data_row(&m, shape.as_deref(), body, counts).map_err(PgError::UpstreamProtocol)
    }

    /// CopyInResponse: until the client ends the copy, the target ignores Sync. Syncs already
    /// queued behind the COPY statement (sent before the copy ended) get no ReadyForQuery.
    fn on_copy_in(&mut self) {
        let mut i = 1;
        while i < self.queue.len() {
            match self.queue.get(i) {
                Some(Pending::Sync { .. }) => {
                    self.queue.remove(i);
                }
                Some(Pending::CopyEnd) => {
                    self.queue.remove(i);
                    return; // the client already ended the copy
                }
                _ => i += 1,
            }
        }
        self.copy_in = true;
    }

    fn on_complete(&mut self, tag: Option<String>, results: &mut Vec<NewEvent>) {
        match self.queue.front_mut() {
            Some(Pending::Query {
                tags,
                rows,
                counted,
                ..
            }) => {
                if let Some(tag) = tag {
                    *rows += wire::tag_rows(&tag).unwrap_or(*counted);
                    tags.push(tag);
                }
                *counted = 0;
            }
            Some(Pending::Execute { .. }) => {
                if let Some(Pending::Execute {
                    seq,
                    start,
                    counted,
                    masked,
                    ..
                }) = self.queue.pop_front()
                {
                    let rows = tag.as_deref().and_then(wire::tag_rows).unwrap_or(counted);
                    results.push(self.result(
                        (seq, start),
                        Outcome::Ok,
                        tag.into_iter().collect(),
                        rows,
                        None,
                        &masked,
                    ));
                }
            }
            _ => {}
        }
    }

    /// Matches an ErrorResponse to what it answers; returns the error to send instead when it
    /// answers the stand-in of a refused statement.
    fn on_error(&mut self, err: ErrorFields, results: &mut Vec<NewEvent>) -> Option<ErrorFields> {
        self.copy_in = false;
        match self.queue.front_mut() {
            Some(Pending::Query {
                error,
                denied: Some(denial),
                ..
            }) => {
                *error = Some(denial.clone());
                return Some(denial.clone());
            }
            Some(Pending::Query { error, .. }) => *error = Some(err),
            Some(Pending::Denied { .. }) => {
                if let Some(Pending::Denied { seq, start, error }) = self.queue.pop_front() {
                    results.push(self.result(
                        (seq, start),
                        Outcome::Refused,
                        vec![],
                        0,
                        Some(&error),
                        &Counts::default(),
                    ));
                    return Some(error);
                }
            }
            Some(Pending::Execute { .. }) => {
                if let Some(Pending::Execute {
                    seq,
                    start,
                    counted,
                    masked,
                    ..
                }) = self.queue.pop_front()
                {
                    results.push(self.result(
                        (seq, start),
                        Outcome::Error,
                        vec![],
                        counted,
                        Some(&err),
                        &masked,
                    ));
                }
            }
            _ => {}
        }
        None
    }

    /// ReadyForQuery: closes a simple query, or everything up to the segment's Sync.
    fn on_ready(&mut self, results: &mut Vec<NewEvent>) {
        self.copy_in = false;
        if let Some(Pending::Query { .. }) = self.queue.front() {
            if let Some(Pending::Query {
                seq,
                start,
                tags,
                rows,
                error,
                denied,
                masked,
                ..
            }) = self.queue.pop_front()
            {
                let outcome = if denied.is_some() {
                    Outcome::Refused
                } else if error.is_some() {
                    Outcome::Error
                } else {
                    Outcome::Ok
                };
                results.push(self.result(
                    (seq, start),
                    outcome,
                    tags,
                    rows,
                    error.as_ref(),
                    &masked,
                ));
            }
            while let Some(Pending::CopyEnd) = self.queue.front() {
                self.queue.pop_front();
            }
            return;
        }
        if !self.queue.iter().any(|p| matches!(p, Pending::Sync { .. })) {
            return;
        }
        while let Some(p) = self.queue.pop_front() {
            match p {
                Pending::Execute { seq, start, .. }
                | Pending::Query { seq, start, .. }
                | Pending::Denied { seq, start, .. } => {
                    let none = Counts::default();
                    results.push(self.result(
                        (seq, start),
                        Outcome::Skipped,
                        vec![],
                        0,
                        None,
                        &none,
                    ));
                }
                Pending::CopyEnd => {}
                Pending::Sync { segment } => {
                    self.undo_ops_through(segment);
                    return;
                }
            }
        }
    }
}

impl Draft {
    fn new(
        text: String,
        mode: &'static str,
        statement_name: Option<String>,
        params: Vec<ParamValue>,
        gd: &GateDecision,
        class: &Classification,
    ) -> Draft {
        let d = &gd.decision;
        let list = |set: &std::collections::BTreeSet<String>| set.iter().cloned().collect();
        Draft {
            text,
            mode,
            statement_name,
            params,
            verdict: d.verdict,
            reason: (d.verdict != Verdict::Allow).then(|| d.reason.clone()),
            decision: Some(Box::new(DecisionRecord {
                classes: class.actions.iter().map(|a| a.name().to_string()).collect(),
                reads: list(&class.reads),
                writes: list(&class.writes),
                functions: list(&class.functions),
                notes: class.notes.clone(),
                policies: d.policies.clone(),
                snapshot: gd.snapshot.clone(),
            })),
        }
    }
}

/// The stand-in for a refused Parse or Execute: a Parse that fails with a syntax error. It
/// names a statement but never creates one, so the session's statements stay as they were.
fn denied_parse() -> BytesMut {
    let mut b = BytesMut::new();
    wire::put_message(&mut b, b'P', |b| {
        wire::put_cstr(b, DENIED_STATEMENT);
        wire::put_cstr(b, DENIED_SQL);
        b.extend_from_slice(&[0, 0]);
    });
    b
}

/// Applies a Parse or Bind to the relay's view as the target will: the unnamed object is
/// replaced, a named one only created if absent. Returns the value before, for undo.
fn stage<V: Clone>(map: &mut HashMap<String, V>, name: &str, new: &V) -> Option<V> {
    let before = map.get(name).cloned();
    if name.is_empty() || before.is_none() {
        map.insert(name.to_string(), new.clone());
    }
    before
}

/// Whether SQL may remove prepared statements behind the protocol's back.
fn resets_prepared_statements(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    lower.contains("deallocate") || lower.contains("discard")
}

fn bad(what: &str) -> PgError {
    PgError::ClientProtocol(what.to_string())
}

/// The catalog to classify with while a schema change this session made is in flight.
fn schema_in_flight(current: &Catalog) -> Arc<Catalog> {
    Arc::new(current.without_user_functions(
        "a schema change made in this session has not been committed yet, and the catalog is read on another connection: user-defined functions count as unknown until it ends",
    ))
}
