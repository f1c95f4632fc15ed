//! Protocol corners where the ledger could name the wrong SQL: a raw-protocol client (written
//! here, so every message is under the test's control) and tokio-postgres's extended-mode COPY.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use futures_util::SinkExt;
use portcullis_core::EventData;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A bare-bones frontend: startup, SCRAM, then raw messages.
struct Raw {
    s: TcpStream,
}

fn msg(tag: u8, body: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(tag);
    b.put_i32(0);
    body(&mut b);
    let len = (b.len() - 1) as i32;
    b[1..5].copy_from_slice(&len.to_be_bytes());
    b
}

fn cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

impl Raw {
    fn connect(gw: &Gateway) -> Raw {
        let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut startup = BytesMut::new();
        startup.put_i32(0);
        startup.put_i32(196_608);
        for (k, v) in [("user", gw.agent.name.as_str()), ("database", DB)] {
            cstr(&mut startup, k);
            cstr(&mut startup, v);
        }
        startup.put_u8(0);
        let len = startup.len() as i32;
        startup[0..4].copy_from_slice(&len.to_be_bytes());
        s.write_all(&startup).expect("startup");
        let mut raw = Raw { s };
        let mut scram = ScramSha256::new(gw.agent.key.as_bytes(), ChannelBinding::unsupported());
        loop {
            let (tag, body) = raw.read();
            match (
                tag,
                body.get(..4)
                    .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]])),
            ) {
                (b'R', Some(10)) => {
                    let m = msg(b'p', |b| {
                        cstr(b, "SCRAM-SHA-256");
                        b.put_i32(scram.message().len() as i32);
                        b.put_slice(scram.message());
                    });
                    raw.s.write_all(&m).expect("write");
                }
                (b'R', Some(11)) => {
                    scram.update(&body[4..]).expect("scram update");
                    let m = msg(b'p', |b| b.put_slice(scram.message()));
                    raw.s.write_all(&m).expect("write");
                }
                (b'R', Some(12)) => scram.finish(&body[4..]).expect("server signature"),
                (b'Z', _) => return raw,
                (b'E', _) => panic!("login failed: {}", String::from_utf8_lossy(&body)),
                _ => {}
            }
        }
    }

    fn read(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0u8; 5];
        self.s.read_exact(&mut head).expect("read header");
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        self.s.read_exact(&mut body).expect("read body");
        (head[0], body)
    }

    /// Reads until `n` ReadyForQuery; returns (tag, body) of everything.
    fn until_ready(&mut self, n: usize) -> Vec<(u8, Vec<u8>)> {
        let mut seen = 0;
        let mut all = Vec::new();
        while seen < n {
            let m = self.read();
            if m.0 == b'Z' {
                seen += 1;
            }
            all.push(m);
        }
        all
    }
}

fn parse(name: &str, sql: &str) -> BytesMut {
    msg(b'P', |b| {
        cstr(b, name);
        cstr(b, sql);
        b.put_i16(0);
    })
}

fn bind(portal: &str, statement: &str) -> BytesMut {
    msg(b'B', |b| {
        cstr(b, portal);
        cstr(b, statement);
        b.put_i16(0);
        b.put_i16(0);
        b.put_i16(0);
    })
}

fn execute(portal: &str) -> BytesMut {
    msg(b'E', |b| {
        cstr(b, portal);
        b.put_i32(0);
    })
}

fn sync() -> BytesMut {
    msg(b'S', |_| {})
}

fn data_rows(msgs: &[(u8, Vec<u8>)]) -> Vec<String> {
    msgs.iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, b)| String::from_utf8_lossy(&b[6..]).into_owned())
        .collect()
}

/// A second Parse of an existing name fails on the target (42P05) and leaves the first in
/// place; pipelined behind it, an Execute of that name runs the FIRST statement, and the
/// ledger must say so, not record the rejected text.
#[test]
fn rejected_reparse_does_not_change_what_the_ledger_records() {
    let cluster = target(&[]);
    let gw = Gateway::start(&cluster, GatewayOptions::default());
    let mut c = Raw::connect(&gw);
    let mut first = parse("s", "SELECT 'first'::text");
    first.extend_from_slice(&sync());
    c.s.write_all(&first).expect("write");
    c.until_ready(1);

    let mut pipeline = parse("s", "SELECT 'second'::text");
    pipeline.extend_from_slice(&sync());
    pipeline.extend_from_slice(&bind("", "s"));
    pipeline.extend_from_slice(&execute(""));
    pipeline.extend_from_slice(&sync());
    c.s.write_all(&pipeline).expect("write");
    let answers = c.until_ready(2);
    assert!(
        answers
            .iter()
            .any(|(t, b)| *t == b'E' && String::from_utf8_lossy(b).contains("42P05")),
        "the target refuses the second Parse"
    );
    assert_eq!(
        data_rows(&answers),
        ["first"],
        "the target ran the first statement"
    );

    let texts: Vec<String> = gw
        .statements()
        .into_iter()
        .filter_map(|(_, e)| match e {
            EventData::Statement { text, mode, .. } if mode == "extended" => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["SELECT 'first'::text"]);
}

/// tokio-postgres runs COPY FROM STDIN in the extended protocol and sends a Sync the target
/// ignores; the results that follow must still be matched to the right statements.
#[test]
fn extended_copy_in_keeps_results_matched() {
    let cluster = target(&[]);
    let gw = Gateway::start(&cluster, GatewayOptions::default());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = gw.tokio_client().await;
        client
            .batch_execute("CREATE TABLE cp (n int)")
            .await
            .expect("create");
        let sink = client.copy_in("COPY cp FROM STDIN").await.expect("copy_in");
        futures_util::pin_mut!(sink);
        for i in 0..10 {
            sink.send(Bytes::from(format!("{i}\n")))
                .await
                .expect("send");
        }
        assert_eq!(sink.finish().await.expect("finish"), 10);
        let n: i64 = client
            .query_one("SELECT count(*) FROM cp WHERE n >= $1", &[&5i32])
            .await
            .expect("q")
            .get(0);
        assert_eq!(n, 5);
        client
            .batch_execute("SELECT 1; SELECT 2")
            .await
            .expect("simple");
    });
    let stmts = gw.statements();
    let results: std::collections::HashMap<u64, EventData> = gw
        .events_of("result")
        .into_iter()
        .filter_map(|e| match e.parse().expect("parse") {
            r @ EventData::Result { statement_seq, .. } => Some((statement_seq, r)),
            _ => None,
        })
        .collect();
    let tags_of = |needle: &str| -> Vec<String> {
        let (seq, _) = stmts
            .iter()
            .find(|(_, e)| matches!(e, EventData::Statement { text, .. } if text.contains(needle)))
            .unwrap_or_else(|| panic!("{needle} recorded"));
        match results.get(seq) {
            Some(EventData::Result { tags, .. }) => tags.clone(),
            other => panic!("no result for {needle}: {other:?}"),
        }
    };
    assert_eq!(tags_of("COPY cp FROM STDIN"), ["COPY 10"]);
    assert_eq!(tags_of("SELECT count(*) FROM cp"), ["SELECT 1"]);
    assert_eq!(tags_of("SELECT 1; SELECT 2"), ["SELECT 1", "SELECT 1"]);
}
