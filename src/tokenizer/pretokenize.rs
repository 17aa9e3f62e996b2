//! Pre-tokenizers for byte-level BPE: split text into words before merges run, as llama.cpp
//! does for each `tokenizer.ggml.pre` (its `llm_tokenizer_bpe` regex lists, run by
//! `unicode_regex_split`).
//!
//! Each pre-tokenizer is a list of splitting steps. A step looks for its pattern inside every
//! piece the previous step produced, and both the matches and the text between them become
//! pieces (so a step only ever refines the split). The GPT-2 and Llama-3 patterns use a
//! look-ahead (`\s+(?!\S)`) the `regex` crate lacks; like llama.cpp, they are hand-written
//! scanners here, and the simpler steps are plain run/character tests. Code point classes
//! come from `unicode.rs` (the same data llama.cpp uses).

use super::unicode::Flags;

/// How text is cut into words before BPE merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// llama.cpp's fallback (`default`, or no `tokenizer.ggml.pre`): punctuation runs, then the
    /// GPT-2 pattern, then digit runs, then groups of three ASCII digits.
    Default,
    /// GPT-2's pattern: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`.
    Gpt2,
    /// Llama 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    Llama3,
    /// SmolLM / StarCoder: every digit alone (`\p{N}`), then the GPT-2 pattern.
    Smollm,
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp uses for a `tokenizer.ggml.pre` name, if we support it.
    /// `gpt2` is accepted as an alias of llama.cpp's `gpt-2`.
    pub fn from_name(name: &str) -> Option<PreTokenizer> {
        Some(match name {
            "" | "default" => PreTokenizer::Default,
            "gpt-2" | "gpt2" | "phi-2" | "mpt" | "olmo" => PreTokenizer::Gpt2,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
            | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => PreTokenizer::Llama3,
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
                PreTokenizer::Smollm
            }
            _ => return None,
        })
    }

    /// The names `from_name` accepts, for error messages.
    pub const NAMES: &'static str = "default, gpt-2 (gpt2), phi-2, mpt, olmo, llama3, llama-v3, llama-bpe, \
        falcon3, falcon-h1, pixtral, midm-2.0, lfm2, jina-v5-nano, dbrx, smaug-bpe, smollm, starcoder, \
        refact, command-r, codeshell, exaone, minerva-7b";

    /// Split `text` into words; returns byte ranges covering `text` in order.
    pub fn split(self, text: &str) -> Vec<std::ops::Range<usize>> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut cps = Vec::with_capacity(text.len());
        let mut starts = Vec::with_capacity(text.len() + 1);
        for (i, c) in text.char_indices() {
            cps.push(c as u32);
            starts.push(i);
        }
        starts.push(text.len());

        let mut pieces = vec![cps.len()];
        match self {
            PreTokenizer::Default => {
                pieces = split_runs(&cps, &pieces, is_default_punct);
                pieces = split_gpt2(&cps, &pieces);
                pieces = split_runs(&cps, &pieces, is_collapsed_number);
                pieces = split_digit_triples(&cps, &pieces);
            }
            PreTokenizer::Gpt2 => pieces = split_gpt2(&cps, &pieces),
            PreTokenizer::Llama3 => pieces = split_llama3(&cps, &pieces),
            PreTokenizer::Smollm => {
                pieces = split_each(&cps, &pieces, is_collapsed_number);
                pieces = split_gpt2(&cps, &pieces);
            }
        }

        let mut out = Vec::with_capacity(pieces.len());
        let mut at = 0;
        for len in pieces {
            out.push(starts[at]..starts[at + len]);
            at += len;
        }
        out
    }
}

/// llama.cpp runs the simple steps through `std::regex` on a "collapsed" text where every
/// non-ASCII code point is one byte standing for its class (white space first), and
/// ASCII stays itself; `\p{N}` then means that class byte or `0-9`.
fn is_collapsed_number(cp: u32) -> bool {
    if cp < 128 {
        return (b'0' as u32..=b'9' as u32).contains(&cp);
    }
    let f = Flags::of(cp);
    !f.is_whitespace() && f.is_number()
}

/// `[\p{P}\$\+<=>\^~\|]` on the collapsed text: ASCII `\p{P}` is `!"#%&'()*,-./:;?@[\]_{}`.
fn is_default_punct(cp: u32) -> bool {
    if cp < 128 {
        return b"!\"#%&'()*,-./:;?@[\\]_{}$+<=>^~|".contains(&(cp as u8));
    }
    let f = Flags::of(cp);
    !f.is_whitespace() && f.is_punctuation()
}

/// Calls `f(start, end)` for each piece, in code point indices.
fn for_pieces(pieces: &[usize], mut f: impl FnMut(usize, usize)) {
    let mut start = 0;
    for &len in pieces {
        f(start, start + len);
        start += len;
    }
}

/// Matches are maximal runs of code points satisfying `pred` (`[...]+`).
fn split_runs(cps: &[u32], pieces: &[usize], pred: fn(u32) -> bool) -> Vec<usize> {
    let mut out = Vec::with_capacity(pieces.len());
    for_pieces(pieces, |ini, end| {
        let mut prev = ini;
        let mut pos = ini;
        while pos < end {
            if pred(cps[pos]) {
                let run = pos;
                while pos < end && pred(cps[pos]) {
                    pos += 1;
                }
                if run > prev {
                    out.push(run - prev);
                }
                out.push(pos - run);
                prev = pos;
            } else {
                pos += 1;
            }
        }
        if end > prev {
            out.push(end - prev);
        }
    });
    out
}

/// Matches are single code points satisfying `pred` (`[...]` without `+`).
fn split_each(cps: &[u32], pieces: &[usize], pred: fn(u32) -> bool) -> Vec<usize> {
    let mut out = Vec::with_capacity(pieces.len());
    for_pieces(pieces, |ini, end| {
        let mut prev = ini;
        for (pos, &cp) in cps.iter().enumerate().take(end).skip(ini) {
            if pred(cp) {
                if pos > prev {
                    out.push(pos - prev);
                }
                out.push(1);
                prev = pos + 1;
            }
        }
        if end > prev {
            out.push(end - prev);
        }
    });
    out
}

/// `[0-9][0-9][0-9]`: leftmost non-overlapping groups of three ASCII digits.
fn split_digit_triples(cps: &[u32], pieces: &[usize]) -> Vec<usize> {
    let digit = |cp: u32| (b'0' as u32..=b'9' as u32).contains(&cp);
    let mut out = Vec::with_capacity(pieces.len());
    for_pieces(pieces, |ini, end| {
        let mut prev = ini;
        let mut pos = ini;
        while pos + 3 <= end {
            if digit(cps[pos]) && digit(cps[pos + 1]) && digit(cps[pos + 2]) {
                if pos > prev {
                    out.push(pos - prev);
                }
                out.push(3);
                pos += 3;
                prev = pos;
            } else {
                pos += 1;
            }
        }
        if end > prev {
            out.push(end - prev);
        }
    });
    out
}

/// Reading a fragment of `cps` with "nothing" past its ends, as the scanners need.
struct Frag<'a> {
    cps: &'a [u32],
    ini: usize,
    end: usize,
}

impl Frag<'_> {
    fn cpt(&self, pos: usize) -> Option<u32> {
        (self.ini <= pos && pos < self.end).then(|| self.cps[pos])
    }
    fn flags(&self, pos: usize) -> Flags {
        match self.cpt(pos) {
            Some(cp) => Flags::of(cp),
            None => Flags::NONE,
        }
    }
}

/// Collects word lengths; empty words are dropped.
struct Words<'a> {
    out: &'a mut Vec<usize>,
    prev_end: usize,
}

impl Words<'_> {
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }
}

fn is_rn(c: Option<u32>) -> bool {
    c == Some('\r' as u32) || c == Some('\n' as u32)
}

/// The GPT-2 pattern, scanned by hand (the order of the tests is the order of the
/// alternatives).
fn split_gpt2(cps: &[u32], pieces: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(pieces.len());
    for_pieces(pieces, |ini, end| {
        let f = Frag { cps, ini, end };
        let mut w = Words { out: &mut out, prev_end: ini };
        let mut pos = ini;
        while pos < end {
            let cpt = cps[pos];
            let flags = Flags::of(cpt);

            // 's|'t|'re|'ve|'m|'ll|'d
            if cpt == '\'' as u32 && pos + 1 < end {
                let next = f.cpt(pos + 1).unwrap_or(0);
                if [b's', b't', b'm', b'd'].iter().any(|&c| next == c as u32) {
                    pos += w.add(pos + 2);
                    continue;
                }
                if pos + 2 < end {
                    let next2 = f.cpt(pos + 2).unwrap_or(0);
                    let pair = |a: u8, b: u8| next == a as u32 && next2 == b as u32;
                    if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
                        pos += w.add(pos + 3);
                        continue;
                    }
                }
            }

            let space = cpt == ' ' as u32;
            let mut flags2 = if space { f.flags(pos + 1) } else { flags };
            // ' ?\p{L}+'
            if flags2.is_letter() {
                pos += space as usize;
                while flags2.is_letter() {
                    pos += 1;
                    flags2 = f.flags(pos);
                }
                w.add(pos);
                continue;
            }
            // ' ?\p{N}+'
            if flags2.is_number() {
                pos += space as usize;
                while flags2.is_number() {
                    pos += 1;
                    flags2 = f.flags(pos);
                }
                w.add(pos);
                continue;
            }
            // ' ?[^\s\p{L}\p{N}]+'
            let other = |fl: Flags| !(fl.is_whitespace() || fl.is_letter() || fl.is_number()) && fl.is_any();
            if other(flags2) {
                pos += space as usize;
                while other(flags2) {
                    pos += 1;
                    flags2 = f.flags(pos);
                }
                w.add(pos);
                continue;
            }

            let mut n_ws = 0;
            while f.flags(pos + n_ws).is_whitespace() {
                n_ws += 1;
            }
            // '\s+(?!\S)': leave the last white space to prefix the next word.
            if n_ws > 1 && f.cpt(pos + n_ws).is_some() {
                pos += n_ws - 1;
                w.add(pos);
                continue;
            }
            if n_ws > 0 {
                pos += n_ws;
                w.add(pos);
                continue;
            }
            pos += 1;
            w.add(pos);
        }
    });
    out
}

/// The Llama 3 pattern, scanned by hand.
fn split_llama3(cps: &[u32], pieces: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(pieces.len());
    for_pieces(pieces, |ini, end| {
        let f = Frag { cps, ini, end };
        let mut w = Words { out: &mut out, prev_end: ini };
        let mut pos = ini;
        while pos < end {
            let cpt = cps[pos];
            let flags = Flags::of(cpt);

            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if cpt == '\'' as u32 && pos + 1 < end {
                let lower =
                    |c: Option<u32>| c.map_or(0, |c| if (0x41..=0x5A).contains(&c) { c + 32 } else { c });
                let next = lower(f.cpt(pos + 1));
                if [b's', b't', b'm', b'd'].iter().any(|&c| next == c as u32) {
                    pos += w.add(pos + 2);
                    continue;
                }
                if pos + 2 < end {
                    let next2 = lower(f.cpt(pos + 2));
                    let pair = |a: u8, b: u8| next == a as u32 && next2 == b as u32;
                    if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
                        pos += w.add(pos + 3);
                        continue;
                    }
                }
            }

            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(is_rn(Some(cpt)) || flags.is_number()) && (flags.is_letter() || f.flags(pos + 1).is_letter())
            {
                pos += 1;
                while f.flags(pos).is_letter() {
                    pos += 1;
                }
                w.add(pos);
                continue;
            }

            // \p{N}{1,3}
            if flags.is_number() {
                let mut run = pos;
                while f.flags(pos).is_number() {
                    pos += 1;
                    if pos - run >= 3 {
                        w.add(pos);
                        run = pos;
                    }
                }
                w.add(pos);
                continue;
            }

            // ' ?[^\s\p{L}\p{N}]+[\r\n]*'. llama.cpp tests the class of the first code point
            // itself for "is anything" here, not that of the one after an optional space.
            let space = cpt == ' ' as u32;
            let mut flags2 = if space { f.flags(pos + 1) } else { flags };
            let other = |fl: Flags| !(fl.is_whitespace() || fl.is_letter() || fl.is_number());
            if other(flags2) && flags.is_any() {
                pos += space as usize;
                while other(flags2) && flags2.is_any() {
                    pos += 1;
                    flags2 = f.flags(pos);
                }
                while is_rn(f.cpt(pos)) {
                    pos += 1;
                }
                w.add(pos);
                continue;
            }

            let mut n_ws = 0;
            let mut last_rn_end = 0;
            while f.flags(pos + n_ws).is_whitespace() {
                if is_rn(f.cpt(pos + n_ws)) {
                    last_rn_end = pos + n_ws + 1;
                }
                n_ws += 1;
            }
            // \s*[\r\n]+
            if last_rn_end > 0 {
                pos = last_rn_end;
                w.add(pos);
                continue;
            }
            // \s+(?!\S)
            if n_ws > 1 && f.cpt(pos + n_ws).is_some() {
                pos += n_ws - 1;
                w.add(pos);
                continue;
            }
            // \s+
            if n_ws > 0 {
                pos += n_ws;
                w.add(pos);
                continue;
            }
            pos += 1;
            w.add(pos);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, s: &str) -> Vec<&str> {
        let r = pre.split(s);
        let v: Vec<&str> = r.into_iter().map(|r| &s[r]).collect();
        assert_eq!(v.concat(), s, "words must cover the text");
        v
    }

    #[test]
    fn gpt2() {
        let p = PreTokenizer::Gpt2;
        assert_eq!(words(p, "Hello world"), ["Hello", " world"]);
        assert_eq!(words(p, "a   b"), ["a", "  ", " b"]);
        assert_eq!(words(p, "a   "), ["a", "   "]);
        assert_eq!(words(p, "I'm 12345!?"), ["I", "'m", " 12345", "!?"]);
        assert_eq!(words(p, "I'M"), ["I", "'", "M"]);
    }

    #[test]
    fn llama3() {
        let p = PreTokenizer::Llama3;
        assert_eq!(words(p, "Hello world"), ["Hello", " world"]);
        assert_eq!(words(p, "1234567"), ["123", "456", "7"]);
        assert_eq!(words(p, "I'M here\n\n  x"), ["I", "'M", " here", "\n\n", " ", " x"]);
        assert_eq!(words(p, "(hi)"), ["(hi", ")"]);
        assert_eq!(words(p, " ...\n\nx"), [" ...\n\n", "x"]);
        assert_eq!(words(p, "a  \n b"), ["a", "  \n", " b"]);
    }

    #[test]
    fn smollm_and_default() {
        assert_eq!(words(PreTokenizer::Smollm, "a 123b"), ["a", " ", "1", "2", "3", "b"]);
        assert_eq!(words(PreTokenizer::Default, "x=1234567;"), ["x", "=", "123", "456", "7", ";"]);
    }

    #[test]
    fn names() {
        assert_eq!(PreTokenizer::from_name("llama-bpe"), Some(PreTokenizer::Llama3));
        assert_eq!(PreTokenizer::from_name("smollm"), Some(PreTokenizer::Smollm));
        assert_eq!(PreTokenizer::from_name("qwen2"), None);
    }
}
