"""Real PostgreSQL drivers against the gateway, one scenario per invocation.

Usage: clients.py SCENARIO DSN [ARGS...]
Prints one JSON document on stdout; exits non-zero on failure (with the traceback).
Driven by crates/portcullis/tests/*.rs.
"""

import asyncio
import json
import sys
import threading
import time


def psycopg_basic(dsn):
    import psycopg

    out = {}
    with psycopg.connect(dsn) as conn:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS py_items (id int primary key, name text, price numeric, tags text[])")
        cur.execute("TRUNCATE py_items")
        # Extended protocol with parameters (psycopg 3 sends Parse/Bind/Execute).
        cur.executemany(
            "INSERT INTO py_items (id, name, price, tags) VALUES (%s, %s, %s, %s)",
            [(i, f"item-{i}", i * 1.5, ["a", "b"]) for i in range(1, 21)],
        )
        cur.execute("SELECT count(*), sum(price) FROM py_items WHERE id > %s", (5,))
        count, total = cur.fetchone()
        out["count"] = count
        out["sum"] = str(total)
        # Binary results and a server-side prepared statement.
        cur = conn.cursor(binary=True)
        for i in range(3):
            cur.execute("SELECT name FROM py_items WHERE id = %s", (i + 1,), prepare=True)
            out.setdefault("names", []).append(cur.fetchone()[0])
        # An error leaves the session usable.
        try:
            cur.execute("SELECT * FROM no_such_table WHERE id = %s", (1,))
        except psycopg.errors.UndefinedTable as e:
            out["error_sqlstate"] = e.sqlstate
        cur.execute("SELECT %s::text || 'ok'", ("still ",))
        out["after_error"] = cur.fetchone()[0]
        # COPY through psycopg.
        with cur.copy("COPY (SELECT id, name FROM py_items ORDER BY id) TO STDOUT") as copy:
            out["copy_rows"] = sum(1 for _ in copy.rows())
        # Notices arrive while the statement runs.
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        cur.execute("DO $$ BEGIN RAISE NOTICE 'hello notice'; END $$")
        out["notices"] = notices
        # Pipeline mode.
        with conn.pipeline():
            for i in range(5):
                conn.execute("SELECT %s::int * 2", (i,))
        out["pipeline"] = "ok"
    print(json.dumps(out))


def psycopg_cancel(dsn):
    import psycopg

    with psycopg.connect(dsn) as conn:
        t = threading.Timer(0.5, conn.cancel)
        t.start()
        started = time.time()
        try:
            conn.execute("SELECT pg_sleep(30)")
            result = {"cancelled": False}
        except psycopg.errors.QueryCanceled as e:
            result = {"cancelled": True, "sqlstate": e.sqlstate}
        result["seconds"] = round(time.time() - started, 2)
        conn.rollback()
        result["after"] = conn.execute("SELECT 42").fetchone()[0]
    print(json.dumps(result))


def psycopg_notify(dsn, direct_dsn):
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN portcullis_test")
        with psycopg.connect(direct_dsn, autocommit=True) as other:
            other.execute("NOTIFY portcullis_test, 'hello through the gateway'")
        got = []
        gen = listener.notifies(timeout=10, stop_after=1)
        for n in gen:
            got.append({"channel": n.channel, "payload": n.payload})
    print(json.dumps({"notifications": got}))


async def _asyncpg_basic(dsn):
    import asyncpg

    conn = await asyncpg.connect(dsn)
    out = {}
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS apg (id bigint primary key, v text, f float8, ok bool, u uuid)")
        await conn.execute("TRUNCATE apg")
        await conn.executemany(
            "INSERT INTO apg VALUES ($1, $2, $3, $4, $5)",
            [(i, f"v{i}", i / 4, i % 2 == 0, f"00000000-0000-0000-0000-{i:012d}") for i in range(1, 11)],
        )
        rows = await conn.fetch("SELECT id, v, f FROM apg WHERE id <= $1 ORDER BY id", 3)
        out["rows"] = [[r["id"], r["v"], r["f"]] for r in rows]
        stmt = await conn.prepare("SELECT v FROM apg WHERE id = $1")
        out["prepared"] = [await stmt.fetchval(i) for i in (4, 5)]
        async with conn.transaction():
            await conn.execute("UPDATE apg SET v = 'changed' WHERE id = $1", 1)
        out["changed"] = await conn.fetchval("SELECT v FROM apg WHERE id = 1")
        # A query timeout makes asyncpg send a CancelRequest.
        try:
            await conn.execute("SELECT pg_sleep(30)", timeout=0.5)
            out["timeout"] = "no"
        except asyncio.TimeoutError:
            out["timeout"] = "cancelled"
        out["after_timeout"] = await conn.fetchval("SELECT 7")
        # COPY in and out.
        await conn.copy_records_to_table("apg", records=[(100, "copied", 1.0, True, None)], columns=["id", "v", "f", "ok", "u"])
        out["copied"] = await conn.fetchval("SELECT v FROM apg WHERE id = 100")
    finally:
        await conn.close()
    print(json.dumps(out))


def asyncpg_basic(dsn):
    asyncio.run(_asyncpg_basic(dsn))


def psycopg_big_pipeline(dsn):
    """Much input and much output in one pipeline."""
    import psycopg

    big = "x" * 20000
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.cursor()
        with conn.pipeline():
            for i in range(1500):
                cur.execute("SELECT length(%s::text || %s)", (big, str(i)))
        # The last result is current after the pipeline.
        last = cur.fetchone()[0]
    print(json.dumps({"last": last}))


TEXT_COLUMNS = "id, full_name, email, phone, card_number, iban, national_id, national_id_kind, city"


def _as_text(rows):
    return [[None if v is None else str(v) for v in r] for r in rows]


async def _asyncpg_rows(dsn):
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        # asyncpg asks for every result in binary format.
        rows = await conn.fetch(f"SELECT {TEXT_COLUMNS}, created_at FROM customers ORDER BY id")
        return _as_text([list(r.values())[:-1] for r in rows]), sum(1 for r in rows if r["created_at"] is not None)
    finally:
        await conn.close()


def masked_rows(dsn):
    """The customers table through every driver and format: text (psycopg), binary
    (psycopg binary cursor, asyncpg), simple and extended protocol. Every row must parse."""
    import psycopg

    out = {}
    with psycopg.connect(dsn) as conn:
        conn.autocommit = True
        out["psycopg_text"] = _as_text(conn.execute(f"SELECT {TEXT_COLUMNS} FROM customers ORDER BY id").fetchall())
        cur = conn.cursor(binary=True)
        cur.execute(f"SELECT {TEXT_COLUMNS}, created_at, to_jsonb(c) AS doc FROM customers c ORDER BY id")
        rows = cur.fetchall()
        out["psycopg_binary"] = _as_text([r[:-2] for r in rows])
        # jsonb in binary: every document still parses, with its email masked.
        out["jsonb_emails"] = [r[-1]["email"] for r in rows]
        # Column rules reach into the document: its names and phones as in the columns.
        out["jsonb_names"] = [r[-1]["full_name"] for r in rows]
        out["jsonb_phones"] = [r[-1]["phone"] for r in rows]
    out["asyncpg"], out["asyncpg_timestamps"] = asyncio.run(_asyncpg_rows(dsn))
    print(json.dumps(out))


def psycopg_param(dsn, card):
    """A bound parameter carrying a card number (extended protocol)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        n = conn.execute("SELECT count(*) FROM customers WHERE card_number = %s", (card,)).fetchone()[0]
    print(json.dumps({"count": n}))


SCENARIOS = {
    "psycopg-param": psycopg_param,
    "masked-rows": masked_rows,
    "psycopg-big-pipeline": psycopg_big_pipeline,
    "psycopg-basic": psycopg_basic,
    "psycopg-cancel": psycopg_cancel,
    "psycopg-notify": psycopg_notify,
    "asyncpg-basic": asyncpg_basic,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](*sys.argv[2:])
