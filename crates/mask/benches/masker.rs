//! Masker throughput: MB/s of text scanned by every detector in one pass, on PII-light and
//! PII-heavy text, and of result values masked per column. Figures go to BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis_core::config::MaskingConfig;
use portcullis_mask::{Counts, FieldKind, Masker};
use std::hint::black_box;

/// About 1 MiB of log-like prose with a sensitive value every ~`every` lines.
fn corpus(every: usize) -> String {
    let prose = [
        "GET /api/v1/orders?page=3 200 took 12ms user_agent=curl/8.5.0",
        "worker 7 finished job 88231 in 0.42s, queue depth 3, retry 0",
        "The shipment for order 1234567 left the warehouse on 2024-03-01 at 10:23:45.",
        "cache hit ratio 0.97 for region eu-west-1, evictions 12, size 512MiB",
        "user updated their profile settings; notifications enabled, theme dark",
    ];
    let pii = [
        "customer jane.doe@example.com paid with 4111 1111 1111 1111",
        "call +1 201 555 0123 about SSN 536-90-4399",
        "refund to DE89 3704 0044 0532 0130 00 from 192.168.1.20",
        "token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 leaked",
    ];
    let mut s = String::new();
    let mut i = 0;
    while s.len() < 1 << 20 {
        if every > 0 && i % every == 0 {
            s.push_str(pii[(i / every) % pii.len()]);
        } else {
            s.push_str(prose[i % prose.len()]);
        }
        s.push('\n');
        i += 1;
    }
    s
}

fn bench(c: &mut Criterion) {
    let m = Masker::new(&MaskingConfig::default(), None).expect("default config compiles");
    let p = m.profile("standard").expect("built in");
    let mut g = c.benchmark_group("mask_text");
    for (name, every) in [
        ("no_pii", 0),
        ("pii_every_10_lines", 10),
        ("pii_every_line", 1),
    ] {
        let text = corpus(every);
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut counts = Counts::default();
                black_box(m.mask_text(&p, black_box(&text), &mut counts).len())
            })
        });
    }
    g.finish();

    // A customers-like row, value by value, as the PostgreSQL relay masks a DataRow.
    let row: [(&[u8], FieldKind); 8] = [
        (b"42", FieldKind::Typed),
        (b"Jane Doe", FieldKind::Text),
        (b"jane.doe@example.com", FieldKind::Text),
        (b"+1 201 555 0123", FieldKind::Text),
        (b"4111 1111 1111 1111", FieldKind::Text),
        (b"DE89 3704 0044 0532 0130 00", FieldKind::Text),
        (b"Berlin", FieldKind::Text),
        (b"2024-03-01 10:23:45+00", FieldKind::Opaque),
    ];
    let bytes: usize = row.iter().map(|(v, _)| v.len()).sum();
    let mut g = c.benchmark_group("mask_row");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("customers_row", |b| {
        b.iter(|| {
            let mut counts = Counts::default();
            for (v, k) in &row {
                black_box(m.mask_field(&p, black_box(v), *k, None, &mut counts));
            }
        })
    });
    // The rows bench/mask/pgbench.sh selects (faker en_US, seed 7: made-up values, invalid
    // area codes and phone extensions included), eight rows of nine columns.
    let bytes: usize = FAKER_ROWS.iter().flatten().map(|v| v.len()).sum();
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("faker_rows_x8", |b| {
        b.iter(|| {
            let mut counts = Counts::default();
            for row in FAKER_ROWS {
                for (i, v) in row.iter().enumerate() {
                    let kind = if i == 0 {
                        FieldKind::Typed
                    } else {
                        FieldKind::Text
                    };
                    black_box(m.mask_field(&p, black_box(v.as_bytes()), kind, None, &mut counts));
                }
            }
        })
    });
    g.finish();
}

/// Test data made up by faker (`bench/mask/pgbench.sh`'s generator, first eight rows).
const FAKER_ROWS: [[&str; 9]; 8] = [
    [
        "1",
        "Anna Aguilar",
        "stacie60@example.org",
        "530.216.6131x86091",
        "3503082462819487",
        "GB46VFDS93518190937865",
        "477-75-7425",
        "Kevinburgh",
        "called Holly back, asked to write to christopherevans@example.com instead",
    ],
    [
        "2",
        "Jason Sherman",
        "jessica49@example.org",
        "(776)901-8955",
        "3511471049746505",
        "GB53OLFT17034236671276",
        "563-36-2244",
        "Shieldsview",
        "called Jasmine back, asked to write to felicia63@example.org instead",
    ],
    [
        "3",
        "Ronald White",
        "thompsonjesse@example.org",
        "902-868-5995x2890",
        "6561760313721596",
        "GB83BDAS28159013962459",
        "373-61-2013",
        "Port Tonymouth",
        "called Timothy back, asked to write to christopher15@example.net instead",
    ],
    [
        "4",
        "Trevor Cox",
        "timothy28@example.org",
        "001-780-584-1485x253",
        "3536338750047434",
        "GB74WTLO55131373537990",
        "491-84-5637",
        "Port Donnafurt",
        "called Kimberly back, asked to write to timothywhite@example.net instead",
    ],
    [
        "5",
        "Angela Moore",
        "christopher67@example.com",
        "(702)497-2997",
        "213100182633041",
        "GB04GJQH95486205798682",
        "545-20-8578",
        "Port Scottburgh",
        "called Charlotte back, asked to write to geraldwells@example.net instead",
    ],
    [
        "6",
        "Karen Frank",
        "hawkinsmark@example.net",
        "+1-203-334-0187",
        "30598983478873",
        "GB05QHWQ48372616751361",
        "218-86-4961",
        "Port Ericstad",
        "called Douglas back, asked to write to tammyrobinson@example.org instead",
    ],
    [
        "7",
        "Candice Reynolds",
        "kdyer@example.net",
        "265.863.5515x05877",
        "378113114402428",
        "GB79NVIM28897514026140",
        "650-12-4269",
        "New Melissaland",
        "called Joseph back, asked to write to chavezmatthew@example.net instead",
    ],
    [
        "8",
        "Joseph Allen",
        "rmcintosh@example.net",
        "524-602-3448",
        "30245040008836",
        "GB73QPHO16786843353265",
        "056-17-0234",
        "Lake Joyceview",
        "called Ryan back, asked to write to millermaureen@example.net instead",
    ],
];

criterion_group!(benches, bench);
criterion_main!(benches);
