"""Independent check of a portcullis inclusion proof, without portcullis.

    portcullis audit prove --config portcullis.toml 1234 > proof.json
    python3 docs/tools/verify_proof.py proof.json 'portcullis/gw-1+1a2b3c4d+AU…'   # or a .pub file

Checks, with Python's standard library and the `openssl` command (for Ed25519 only):
  1. the event's hash, recomputed from its fields (chain layout: docs/ledger.md);
  2. the RFC 6962 audit path from that event's leaf to the tree root (RFC 9162 §2.1.3.2);
  3. that the root and tree size are the ones the signed checkpoint states, and the
     checkpoint's Ed25519 signature (C2SP signed note) with the verifier key given.
Prints "OK event <seq> in <origin> at tree size <n>" or "FAILED: <why>" and exits 1.
"""

import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile


def sha256(b):
    return hashlib.sha256(b).digest()


def event_hash(e):
    k, s, d = e["kind"].encode(), e["session_id"].encode(), e["data"].encode()
    msg = (bytes.fromhex(e["prev_hash"]) + struct.pack(">Qq", e["seq"], e["ts_us"])
           + struct.pack(">I", len(k)) + k + struct.pack(">I", len(s)) + s
           + struct.pack(">I", len(d)) + d)
    return sha256(msg)


def root_from_path(index, size, leaf, path):
    """Walks the audit path up; returns the root it leads to, or None if it cannot fit."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = sha256(b"\x01" + p + r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = sha256(b"\x01" + r + p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def ed25519_verify(public, message, signature):
    """Ed25519 via `openssl pkeyutl` (the raw key wrapped in its SubjectPublicKeyInfo)."""
    spki = bytes.fromhex("302a300506032b6570032100") + public
    pem = ("-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(spki).decode()
           + "\n-----END PUBLIC KEY-----\n")
    with tempfile.TemporaryDirectory() as d:
        files = {"key.pem": pem.encode(), "msg": message, "sig": signature}
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        run = subprocess.run(
            ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", os.path.join(d, "key.pem"),
             "-rawin", "-in", os.path.join(d, "msg"), "-sigfile", os.path.join(d, "sig")],
            capture_output=True)
        return run.returncode == 0


def open_checkpoint(note, vkey):
    """Returns (origin, size, root) if the note is signed by vkey, else raises ValueError."""
    name, key_id, key = vkey.strip().split("+", 2)
    raw = base64.b64decode(key)
    if raw[0] != 1 or len(raw) != 33:
        raise ValueError("the verifier key is not an Ed25519 key")
    public = raw[1:]
    if sha256(name.encode() + b"\n\x01" + public)[:4].hex() != key_id:
        raise ValueError("the verifier key's id does not match its key")
    at = note.rfind("\n\n")
    if at < 0:
        raise ValueError("the checkpoint is not a signed note")
    body, sigs = note[:at + 1], note[at + 2:]
    for line in sigs.splitlines():
        if not line.startswith("\u2014 "):
            raise ValueError(f"malformed signature line {line!r}")
        signer, blob = line[2:].split(" ", 1)
        blob = base64.b64decode(blob)
        if signer == name and blob[:4].hex() == key_id:
            if not ed25519_verify(public, body.encode(), blob[4:]):
                raise ValueError("the checkpoint's signature does not verify")
            origin, size, root = body.split("\n")[:3]
            if origin != name:
                raise ValueError("the checkpoint's origin is not the key's name")
            return origin, int(size), base64.b64decode(root)
    raise ValueError(f"the checkpoint is not signed by {name}+{key_id}")


def main(proof_file, vkey_arg):
    vkey = open(vkey_arg).read() if os.path.isfile(vkey_arg) else vkey_arg
    proof = json.load(open(proof_file))
    e = proof["event"]
    if event_hash(e).hex() != e["hash"]:
        return f"event {e['seq']}: its fields do not hash to its hash (altered)"
    try:
        origin, size, root = open_checkpoint(proof["checkpoint"], vkey)
    except ValueError as why:
        return str(why)
    if size != proof["tree_size"] or root.hex() != proof["root"]:
        return "the proof's tree size or root is not the checkpoint's"
    leaf = sha256(b"\x00" + bytes.fromhex(e["hash"]))
    path = [bytes.fromhex(h) for h in proof["path"]]
    if root_from_path(e["seq"] - 1, size, leaf, path) != root:
        return "the audit path does not lead from the event to the checkpoint's root"
    print(f"OK event {e['seq']} in {origin} at tree size {size}")
    return None


if __name__ == "__main__":
    problem = main(sys.argv[1], sys.argv[2])
    if problem:
        print(f"FAILED: {problem}")
        sys.exit(1)
