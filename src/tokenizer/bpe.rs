//! Byte-level BPE (`tokenizer.ggml.model = gpt2`): each pre-tokenized word is written in
//! GPT-2's byte alphabet, then adjacent symbols are merged, lowest merge rank first (ties:
//! leftmost), until no listed merge applies, as llama.cpp's `llm_tokenizer_bpe_session`.
//!
//! Merges are looked up by id pairs, not strings: every string that appears as a merge
//! half gets a "part id" (its token id when it is a token, ids past the vocabulary
//! otherwise), and each merge knows the part id of its result. A word then costs one hash
//! lookup per candidate pair and no string building.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::hash::FastMap;
use super::unicode::BYTE_TO_CHAR;

const NO_PART: u32 = u32::MAX;

/// A mergeable pair: (rank, left index, left length, right length, right index).
type Candidate = (u32, usize, usize, usize, usize);

pub(crate) struct Bpe {
    /// (left part, right part) -> rank (the merge's index in `tokenizer.ggml.merges`).
    ranks: FastMap<(u32, u32), u32>,
    /// rank -> part id of the merged string (`NO_PART` if it is neither a token nor a half).
    merged: Vec<u32>,
    /// Part id of each byte's character.
    byte_part: [u32; 256],
    n_vocab: u32,
    /// Emit a whole word as one token when it is in the vocabulary (Llama 3).
    pub ignore_merges: bool,
}

impl Bpe {
    /// `merges` are "left right" strings; `token_to_id` maps token text to id.
    pub fn new(
        merges: &[String],
        token_to_id: &FastMap<String, u32>,
        n_vocab: u32,
        ignore_merges: bool,
    ) -> Bpe {
        // Most of the load time is hash lookups of merge strings (three per merge: the
        // halves and the result), so they run on several threads. Not on rayon's global
        // pool: loading must not initialise it before the CLI sizes it.
        let lookup = |chunk: &[String]| -> Vec<[u32; 3]> {
            let get = |s: &str| token_to_id.get(s).copied().unwrap_or(NO_PART);
            let mut joined = String::new();
            chunk
                .iter()
                .map(|m| match split_merge(m) {
                    None => [NO_PART; 3],
                    Some((a, b)) => {
                        joined.clear();
                        joined.push_str(a);
                        joined.push_str(b);
                        [get(a), get(b), get(&joined)]
                    }
                })
                .collect()
        };
        let threads = if merges.len() < 50_000 {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
        };
        let per = merges.len().div_ceil(threads).max(1);
        let mut ids: Vec<[u32; 3]> = std::thread::scope(|s| {
            let jobs: Vec<_> = merges.chunks(per).map(|c| (c, s.spawn(move || lookup(c)))).collect();
            jobs.into_iter().flat_map(|(c, job)| job.join().unwrap_or_else(|_| lookup(c))).collect()
        });

        // Halves that are not tokens (not seen in real vocabularies, but allowed) get part
        // ids past the vocabulary, so merges through them still work.
        let mut extra: FastMap<&str, u32> = FastMap::default();
        for (m, id) in merges.iter().zip(ids.iter_mut()) {
            if id[0] != NO_PART && id[1] != NO_PART {
                continue;
            }
            let Some((a, b)) = split_merge(m) else { continue };
            for (half, slot) in [(a, 0), (b, 1)] {
                if id[slot] == NO_PART {
                    let next = n_vocab.saturating_add(extra.len() as u32);
                    if next < NO_PART {
                        id[slot] = *extra.entry(half).or_insert(next);
                    }
                }
            }
        }
        if !extra.is_empty() {
            let mut joined = String::new();
            for (m, id) in merges.iter().zip(ids.iter_mut()) {
                if let (NO_PART, Some((a, b))) = (id[2], split_merge(m)) {
                    joined.clear();
                    joined.push_str(a);
                    joined.push_str(b);
                    id[2] = extra.get(joined.as_str()).copied().unwrap_or(NO_PART);
                }
            }
        }

        let mut ranks = FastMap::with_capacity_and_hasher(ids.len(), Default::default());
        for (rank, id) in ids.iter().enumerate() {
            if id[0] != NO_PART && id[1] != NO_PART {
                // The first listing of a pair keeps its rank.
                ranks.entry((id[0], id[1])).or_insert(rank as u32);
            }
        }
        let merged = ids.iter().map(|id| id[2]).collect();

        let mut byte_part = [NO_PART; 256];
        let mut buf = [0u8; 4];
        for (b, part) in byte_part.iter_mut().enumerate() {
            let s: &str = BYTE_TO_CHAR[b].encode_utf8(&mut buf);
            *part = token_to_id.get(s).or_else(|| extra.get(s)).copied().unwrap_or(NO_PART);
        }

        Bpe { ranks, merged, byte_part, n_vocab, ignore_merges }
    }

    /// Tokens of one word (raw UTF-8 bytes, not yet in the byte alphabet), appended to `out`.
    pub fn encode_word(&self, word: &[u8], token_to_id: &FastMap<String, u32>, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if self.ignore_merges {
            let encoded: String = word.iter().map(|&b| BYTE_TO_CHAR[b as usize]).collect();
            if let Some(&id) = token_to_id.get(&encoded) {
                out.push(id);
                return;
            }
        }

        struct Sym {
            start: usize,
            len: usize,
            part: u32,
            prev: usize,
            next: usize,
        }
        const END: usize = usize::MAX;
        let n = word.len();
        let mut syms: Vec<Sym> = (0..n)
            .map(|i| Sym {
                start: i,
                len: 1,
                part: self.byte_part[word[i] as usize],
                prev: if i == 0 { END } else { i - 1 },
                next: if i + 1 == n { END } else { i + 1 },
            })
            .collect();

        // (rank, left, left length, right length, right): smallest rank, then leftmost.
        let mut queue: BinaryHeap<Reverse<Candidate>> = BinaryHeap::new();
        let push = |syms: &[Sym], queue: &mut BinaryHeap<_>, l: usize, r: usize| {
            if l == END || r == END {
                return;
            }
            let (pl, pr) = (syms[l].part, syms[r].part);
            if pl == NO_PART || pr == NO_PART {
                return;
            }
            if let Some(&rank) = self.ranks.get(&(pl, pr)) {
                queue.push(Reverse((rank, l, syms[l].len, syms[r].len, r)));
            }
        };
        for i in 1..n {
            push(&syms, &mut queue, i - 1, i);
        }

        while let Some(Reverse((rank, l, l_len, r_len, r))) = queue.pop() {
            // Stale when either side has changed since the pair was queued.
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len != l_len || syms[r].len != r_len {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[l].part = self.merged[rank as usize];
            syms[r].len = 0;
            let after = syms[r].next;
            syms[l].next = after;
            if after != END {
                syms[after].prev = l;
            }
            let before = syms[l].prev;
            push(&syms, &mut queue, before, l);
            push(&syms, &mut queue, l, after);
        }

        let mut i = 0;
        while i != END {
            let s = &syms[i];
            if s.part < self.n_vocab {
                out.push(s.part);
            } else {
                // Not a token: llama.cpp looks up each byte of the byte-alphabet text as a
                // one-byte token, which only printable ASCII can be.
                for &b in &word[s.start..s.start + s.len] {
                    let p = self.byte_part[b as usize];
                    if (0x21..=0x7E).contains(&b) && p < self.n_vocab {
                        out.push(p);
                    }
                }
            }
            i = s.next;
        }
    }
}

/// A merge's halves, split as llama.cpp does: at the first space after the first byte.
/// Without such a space there is no merge (llama.cpp keeps empty halves, which never match).
fn split_merge(m: &str) -> Option<(&str, &str)> {
    let at = m.as_bytes().iter().skip(1).position(|&b| b == b' ')? + 1;
    Some((&m[..at], &m[at + 1..]))
}
