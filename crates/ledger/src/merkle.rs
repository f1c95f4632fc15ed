//! RFC 6962 Merkle trees over the ledger's events: roots, inclusion and consistency proofs.
//!
//! The hash chain ([`crate::chain`]) proves that nothing *inside* a ledger changed; it cannot
//! prove that the ledger was not cut short, and checking one event against it means reading
//! every event before it. A Merkle tree over the same events fixes both: a signed
//! [checkpoint](crate::checkpoint) names the tree size and root, so a shorter ledger no longer
//! matches it, and one event can be shown to be in the tree with `log2(n)` hashes.
//!
//! # The tree (RFC 6962 §2.1, RFC 9162 §2.1)
//!
//! ```text
//! leaf i   = SHA-256(0x00 ‖ hash of event seq i+1)        the 32-byte chain hash (crate::chain)
//! node     = SHA-256(0x01 ‖ left ‖ right)
//! MTH({})  = SHA-256("")
//! MTH(D[n])= node(MTH(D[0:k]), MTH(D[k:n]))   k = the largest power of two below n
//! ```
//!
//! The leaf input is the event's chain hash rather than its columns: it already commits to
//! every column and to all earlier events, so a proof needs nothing but 32-byte values. Leaf
//! *index* `i` is event `seq = i + 1`.
//!
//! Everything here is a plain function of leaf hashes, checked against the Certificate
//! Transparency reference vectors in the tests, so any RFC 6962 implementation can check a
//! proof that portcullis prints (`docs/tools/verify_proof.py` does, with Python's standard
//! library).

use sha2::{Digest, Sha256};

/// A 32-byte SHA-256 value: a leaf hash, a node hash or a root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The leaf hash of arbitrary leaf data (`SHA-256(0x00 ‖ data)`).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// The leaf hash of one ledger event, from its chain hash.
pub fn event_leaf(event_hash: &Hash) -> Hash {
    leaf_hash(event_hash)
}

/// An interior node (`SHA-256(0x01 ‖ left ‖ right)`).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The root of the tree over `leaves` (leaf hashes), computed directly (`O(n)` hashes).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof (audit path, RFC 6962 §2.1.1) of leaf `index` in the tree over
/// `leaves`. `None` if `index` is not a leaf of it.
pub fn inclusion_proof(index: u64, leaves: &[Hash]) -> Option<Vec<Hash>> {
    if index >= leaves.len() as u64 {
        return None;
    }
    let mut proof = Vec::new();
    path(index as usize, leaves, &mut proof);
    Some(proof)
}

fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n as u64) as usize;
    if m < k {
        path(m, &leaves[..k], out);
        out.push(root(&leaves[k..]));
    } else {
        path(m - k, &leaves[k..], out);
        out.push(root(&leaves[..k]));
    }
}

/// The consistency proof (RFC 6962 §2.1.2) between the tree of the first `old_size` leaves
/// and the tree over all `leaves`. `None` unless `0 < old_size <= leaves.len()`.
pub fn consistency_proof(old_size: u64, leaves: &[Hash]) -> Option<Vec<Hash>> {
    if old_size == 0 || old_size > leaves.len() as u64 {
        return None;
    }
    let mut proof = Vec::new();
    subproof(old_size as usize, leaves, true, &mut proof);
    Some(proof)
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n as u64) as usize;
    if m <= k {
        subproof(m, &leaves[..k], complete, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(root(&leaves[..k]));
    }
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2): is `leaf` the leaf at `index` of the tree
/// of `size` leaves whose root is `root`?
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2): is the tree of `old_size` leaves with root
/// `old_root` a prefix of the tree of `new_size` leaves with root `new_root`?
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> bool {
    if old_size == 0 || old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    fr == *old_root && sr == *new_root && sn == 0
}

/// The right edge of a growing tree: the roots of its perfect subtrees, largest first (one per
/// set bit of the size). Appending a leaf costs on average one node hash; the root of the
/// whole tree is `O(log n)` hashes. This is how the gateway and `audit verify` follow the
/// tree without holding its leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    peaks: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// Number of leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut n = self.size;
        while n & 1 == 1 {
            // The last peak and the new one are siblings of equal size: merge them.
            let Some(left) = self.peaks.pop() else { break };
            h = node_hash(&left, &h);
            n >>= 1;
        }
        self.peaks.push(h);
        self.size += 1;
    }

    /// The root of the tree so far.
    pub fn root(&self) -> Hash {
        let mut it = self.peaks.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// The peaks, concatenated (what a checkpoint row stores to resume the tree).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.peaks.iter().flatten().copied().collect()
    }

    /// Rebuilds a frontier of `size` leaves from [`to_bytes`](Self::to_bytes); `None` if the
    /// bytes do not hold one hash per set bit of `size`.
    pub fn from_bytes(size: u64, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != size.count_ones() as usize * 32 {
            return None;
        }
        let peaks = bytes
            .chunks_exact(32)
            .map(|c| <[u8; 32]>::try_from(c).ok())
            .collect::<Option<Vec<_>>>()?;
        Some(Frontier { size, peaks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        out
    }

    fn hex(x: &Hash) -> String {
        crate::chain::to_hex(x)
    }

    /// The Certificate Transparency reference leaves (RFC 6962 test data).
    fn ct_leaves() -> Vec<Hash> {
        let data: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        data.iter().map(|d| leaf_hash(d)).collect()
    }

    /// Roots of the first 0..=8 reference leaves.
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn reference_roots() {
        let leaves = ct_leaves();
        let mut f = Frontier::new();
        assert_eq!(hex(&f.root()), CT_ROOTS[0]);
        for n in 1..=8 {
            assert_eq!(hex(&root(&leaves[..n])), CT_ROOTS[n], "MTH of {n} leaves");
            f.push(leaves[n - 1]);
            assert_eq!(hex(&f.root()), CT_ROOTS[n], "frontier root of {n} leaves");
        }
    }

    /// (leaf index, tree size, audit path) from the reference test data.
    #[test]
    fn reference_inclusion_proofs() {
        let leaves = ct_leaves();
        let cases: [(u64, usize, &[&str]); 4] = [
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (index, size, want) in cases {
            let proof = inclusion_proof(index, &leaves[..size]).unwrap_or_default();
            let got: Vec<String> = proof.iter().map(hex).collect();
            assert_eq!(got, want, "path of leaf {index} in {size}");
            let r = h(CT_ROOTS[size]);
            let leaf = leaves[index as usize];
            assert!(verify_inclusion(index, size as u64, &leaf, &proof, &r));
            assert!(!verify_inclusion(
                index,
                size as u64,
                &leaf,
                &proof,
                &h(CT_ROOTS[0])
            ));
            assert!(!verify_inclusion(index + 1, size as u64, &leaf, &proof, &r));
            // (A wrong tree size is not always noticed by the path alone, e.g. leaf 1 of 5
            // and of 6 share a path; the size is bound by the signed checkpoint instead.)
            assert!(!verify_inclusion(index, size as u64 * 4, &leaf, &proof, &r));
        }
    }

    /// (old size, new size, proof) from the reference test data.
    #[test]
    fn reference_consistency_proofs() {
        let leaves = ct_leaves();
        let cases: [(u64, usize, &[&str]); 4] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old, new, want) in cases {
            let proof = consistency_proof(old, &leaves[..new]).unwrap_or_default();
            let got: Vec<String> = proof.iter().map(hex).collect();
            assert_eq!(got, want, "consistency {old} → {new}");
            let (r1, r2) = (h(CT_ROOTS[old as usize]), h(CT_ROOTS[new]));
            assert!(verify_consistency(old, new as u64, &proof, &r1, &r2));
            if old != new as u64 {
                assert!(!verify_consistency(old, new as u64, &proof, &r2, &r2));
                assert!(!verify_consistency(old, new as u64, &proof, &r1, &r1));
            }
        }
    }

    /// Every leaf of every tree up to 70 leaves proves its inclusion, every pair of sizes its
    /// consistency, and a changed leaf or root never verifies.
    #[test]
    fn every_shape_round_trips() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut f = Frontier::new();
        let roots: Vec<Hash> = (0..=leaves.len()).map(|n| root(&leaves[..n])).collect();
        for n in 1..=leaves.len() {
            f.push(leaves[n - 1]);
            assert_eq!(f.root(), roots[n]);
            let back = Frontier::from_bytes(n as u64, &f.to_bytes());
            assert_eq!(back.as_ref(), Some(&f));
            for i in 0..n {
                let p = inclusion_proof(i as u64, &leaves[..n]).unwrap_or_default();
                assert!(verify_inclusion(
                    i as u64, n as u64, &leaves[i], &p, &roots[n]
                ));
                let mut other = leaves[i];
                other[0] ^= 1;
                assert!(!verify_inclusion(i as u64, n as u64, &other, &p, &roots[n]));
            }
            for m in 1..=n {
                let p = consistency_proof(m as u64, &leaves[..n]).unwrap_or_default();
                assert!(
                    verify_consistency(m as u64, n as u64, &p, &roots[m], &roots[n]),
                    "{m} → {n}"
                );
                if m < n {
                    let mut bad = roots[m];
                    bad[31] ^= 1;
                    assert!(!verify_consistency(m as u64, n as u64, &p, &bad, &roots[n]));
                }
            }
        }
        assert!(Frontier::from_bytes(3, &[0u8; 32]).is_none());
        assert!(inclusion_proof(5, &leaves[..5]).is_none());
        assert!(consistency_proof(0, &leaves[..5]).is_none());
    }
}
