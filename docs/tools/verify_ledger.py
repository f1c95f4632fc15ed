"""Independent check of a portcullis ledger, with nothing but Python's standard library.

    python3 docs/tools/verify_ledger.py path/to/ledger.db

Recomputes every event's hash from its stored columns (layout: docs/ledger.md) and checks the
chain. Prints "OK <n> events <head hash>" or "BROKEN at seq <n>: <why>" and exits 1.
"""

import hashlib
import sqlite3
import struct
import sys


def main(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    prev, expected, n = bytes(32), 1, 0
    rows = db.execute("SELECT seq, ts_us, session_id, kind, data, prev_hash, hash FROM events ORDER BY seq")
    for seq, ts, sid, kind, data, stored_prev, stored_hash in rows:
        if seq != expected:
            return f"BROKEN at seq {expected}: missing"
        k, s, d = kind.encode(), sid.encode(), data.encode()
        msg = (stored_prev + struct.pack(">Qq", seq, ts) + struct.pack(">I", len(k)) + k
               + struct.pack(">I", len(s)) + s + struct.pack(">I", len(d)) + d)
        if hashlib.sha256(msg).digest() != stored_hash:
            return f"BROKEN at seq {seq}: altered"
        if stored_prev != prev:
            return f"BROKEN at seq {seq}: reordered"
        prev, expected, n = stored_hash, expected + 1, n + 1
    print(f"OK {n} events {prev.hex()}")
    return None


if __name__ == "__main__":
    problem = main(sys.argv[1])
    if problem:
        print(problem)
        sys.exit(1)
