//! SentencePiece BPE (`tokenizer.ggml.model = llama`), as llama.cpp's
//! `llm_tokenizer_spm_session`: start from single characters, repeatedly merge the adjacent
//! pair whose concatenation is the vocabulary token with the highest score (ties: leftmost),
//! and write what remains; a piece that is not a token falls back to byte tokens `<0xNN>`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::hash::FastMap;

struct Pair {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Ord for Pair {
    /// Greatest first: highest score, then smallest left index.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.total_cmp(&o.score).then(o.left.cmp(&self.left))
    }
}
impl PartialOrd for Pair {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl PartialEq for Pair {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Pair {}

/// Tokens of `text` (spaces already written as `▁`), appended to `out`. `byte_token[b]` is
/// the token for raw byte b, if any.
pub(crate) fn encode(
    text: &str,
    token_to_id: &FastMap<String, u32>,
    scores: &[f32],
    byte_token: &[Option<u32>; 256],
    out: &mut Vec<u32>,
) {
    if text.is_empty() {
        return;
    }
    struct Sym {
        start: usize,
        len: usize,
        prev: usize,
        next: usize,
    }
    const END: usize = usize::MAX;
    let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
    for (i, (at, c)) in text.char_indices().enumerate() {
        let len = c.len_utf8();
        syms.push(Sym {
            start: at,
            len,
            prev: if i == 0 { END } else { i - 1 },
            next: if at + len == text.len() { END } else { i + 1 },
        });
    }

    let mut queue = BinaryHeap::new();
    let push = |syms: &[Sym], queue: &mut BinaryHeap<Pair>, l: usize, r: usize| {
        if l == END || r == END {
            return;
        }
        let start = syms[l].start;
        let size = syms[l].len + syms[r].len;
        if let Some(&id) = token_to_id.get(&text[start..start + size]) {
            let score = scores.get(id as usize).copied().unwrap_or(0.0);
            queue.push(Pair { score, left: l, right: r, size });
        }
    };
    for i in 1..syms.len() {
        push(&syms, &mut queue, i - 1, i);
    }

    while let Some(p) = queue.pop() {
        let (l, r) = (p.left, p.right);
        if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != p.size {
            continue;
        }
        syms[l].len += syms[r].len;
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

    // Merged symbols are tokens by construction; a single character may not be.
    let mut i = 0;
    while i != END {
        let s = &syms[i];
        let piece = &text[s.start..s.start + s.len];
        match token_to_id.get(piece) {
            Some(&id) => out.push(id),
            None => out.extend(piece.bytes().filter_map(|b| byte_token[b as usize])),
        }
        i = s.next;
    }
}
