"""An independent check of subledger's signed digests and Merkle proofs, written from
docs/hash-chain.md alone ("Signed digests", "Proofs"; RFC 9162 §2.1.3.2 and §2.1.4.2), so that
an auditor need not trust the Rust code. Usage (grpcurl's JSON replies, the SPKI PEM key):
  check_proofs.py PUBLIC.pem OLD_DIGEST.json NEW_DIGEST.json INCLUSION.json CONSISTENCY.json
One line per check; exit status 1 if any fails."""
import base64, calendar, hashlib, json, sys, uuid
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

H = lambda *parts: hashlib.sha256(b"".join(parts)).digest()
i64 = lambda n: int(n).to_bytes(8, "big", signed=True)
text = lambda s: len(s.encode()).to_bytes(4, "big") + s.encode()
b64 = lambda s: base64.b64decode(s or "")

def micros(rfc3339):  # grpcurl prints UTC, "Z", with 0 to 9 fraction digits
    whole, _, frac = rfc3339.rstrip("Z").partition(".")
    return calendar.timegm(tuple(map(int, whole.replace("T", "-").replace(":", "-").split("-")))) * 10**6 + int((frac + "000000")[:6])

def signature_ok(key, d):
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    if hashlib.sha256(raw).digest()[:8].hex() != d.get("keyId"): return False
    signed = (text("subledger.v1.digest-signature") + uuid.UUID(d["ledgerId"]).bytes + text(d["offeringId"])
              + i64(d["sequence"]) + b64(d["entryHash"]) + (b64(d.get("rootHash")) or bytes(32))
              + i64(d.get("treeSize", 0)) + i64(micros(d["recordTime"])))
    try: key.verify(b64(d["signature"]), signed); return True
    except Exception: return False

def inclusion_ok(p, root, size):  # RFC 9162 §2.1.3.2
    fn, sn, r = int(p["sequence"]) - 1, size - 1, H(b"\0", b64(p["entryHash"]))
    if int(p.get("treeSize", 0)) != size or not 0 <= fn <= sn: return False
    for x in map(b64, p.get("auditPath", [])):
        if sn == 0: return False
        if fn & 1 or fn == sn:
            r = H(b"\1", x, r)
            while not fn & 1 and fn: fn, sn = fn >> 1, sn >> 1
        else: r = H(b"\1", r, x)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root

def consistency_ok(p, first, old_root, second, new_root):  # RFC 9162 §2.1.4.2
    path = list(map(b64, p.get("path", [])))
    if (int(p.get("fromSize", 0)), int(p.get("toSize", 0))) != (first, second) or not 0 < first <= second: return False
    if first == second: return not path and old_root == new_root
    if first & (first - 1) == 0: path.insert(0, old_root)
    if not path: return False
    fn, sn = first - 1, second - 1
    while fn & 1: fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0: return False
        if fn & 1 or fn == sn:
            fr, sr = H(b"\1", c, fr), H(b"\1", c, sr)
            while not fn & 1 and fn: fn, sn = fn >> 1, sn >> 1
        else: sr = H(b"\1", sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == old_root and sr == new_root and sn == 0

key_file, old_file, new_file, inc_file, con_file = sys.argv[1:6]
key = load_pem_public_key(open(key_file, "rb").read())
old, new, inc, con = (json.load(open(f)) for f in (old_file, new_file, inc_file, con_file))
size = lambda d: int(d.get("treeSize", 0))
at = new if size(new) == int(inc.get("treeSize", 0)) else old
checks = [(f"signature of {old_file}", signature_ok(key, old)), (f"signature of {new_file}", signature_ok(key, new)),
          (f"inclusion of sequence {inc.get('sequence')} in the tree of {size(at)}", inclusion_ok(inc, b64(at.get("rootHash")), size(at))),
          (f"consistency of the tree of {size(old)} with the tree of {size(new)}",
           consistency_ok(con, size(old), b64(old.get("rootHash")), size(new), b64(new.get("rootHash"))))]
for name, ok in checks: print(("OK     " if ok else "FAILED ") + name)
sys.exit(0 if all(ok for _, ok in checks) else 1)
