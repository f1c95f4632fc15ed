//! Fuzzes the wire-format decoders the gateway runs on bytes from clients and targets: none
//! may panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_proto_postgres::wire::{decode_binary, tag_rows, type_name, ErrorFields, Reader};

fuzz_target!(|data: &[u8]| {
    // An ErrorResponse / NoticeResponse body.
    let _ = ErrorFields::parse(data);

    // A binary parameter: the first four bytes choose the type (folded onto the known OIDs
    // half the time, so that the typed branches are reached), the rest is the value.
    if data.len() >= 4 {
        let raw = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        const KNOWN: [u32; 22] = [
            16, 17, 18, 19, 20, 21, 23, 25, 26, 114, 700, 701, 1042, 1043, 1082, 1083, 1114, 1184,
            1700, 2950, 3802, 0,
        ];
        let oid = if raw & 0x8000_0000 != 0 {
            KNOWN[(raw as usize) % KNOWN.len()]
        } else {
            raw
        };
        let _ = type_name(oid);
        let _ = decode_binary(oid, &data[4..]);
    }

    // A command tag.
    let _ = tag_rows(&String::from_utf8_lossy(data));

    // The reader, driven by the bytes themselves: each byte picks the next read. It must
    // never panic and never report more than it was given.
    let (script, body) = data.split_at(data.len() / 2);
    let mut r = Reader::new(body);
    for op in script {
        let before = r.remaining();
        match op % 6 {
            0 => {
                let _ = r.u8();
            }
            1 => {
                let _ = r.i16();
            }
            2 => {
                let _ = r.i32();
            }
            3 => {
                let _ = r.u32();
            }
            4 => {
                let _ = r.cstr();
            }
            _ => {
                let _ = r.bytes((op / 6) as usize);
            }
        }
        assert!(r.remaining() <= before);
    }
});
