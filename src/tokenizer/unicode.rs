//! Code point classes (letter, number, white space...) as llama.cpp's pre-tokenizers see
//! them, and GPT-2's byte-level mapping (every byte to a printable character).

use super::unicode_tables::FLAG_RANGES;

/// Classes of one code point. `Flags::NONE` (all bits clear) stands for "no code point"
/// (a position past the end of a fragment), which is distinct from an unassigned one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flags(u16);

impl Flags {
    pub const NONE: Flags = Flags(0);
    const UNDEFINED: u16 = 0x01;
    const NUMBER: u16 = 0x02;
    const LETTER: u16 = 0x04;
    const PUNCTUATION: u16 = 0x20;
    const WHITESPACE: u16 = 0x100;

    pub fn of(cp: u32) -> Flags {
        if cp < 128 {
            return Flags(ASCII[cp as usize]);
        }
        Flags(lookup(cp))
    }
    pub fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    pub fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    pub fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    pub fn is_punctuation(self) -> bool {
        self.0 & Self::PUNCTUATION != 0
    }
    /// Any class at all (true for unassigned code points, false only for `NONE`).
    pub fn is_any(self) -> bool {
        self.0 != 0
    }
}

const fn lookup(cp: u32) -> u16 {
    if cp >= 0x110000 {
        return Flags::UNDEFINED;
    }
    // Last range whose start is <= cp (the table starts at 0).
    let (mut lo, mut hi) = (0usize, FLAG_RANGES.len());
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if FLAG_RANGES[mid].0 <= cp {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    FLAG_RANGES[lo].1
}

static ASCII: [u16; 128] = {
    let mut t = [0u16; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = lookup(i as u32);
        i += 1;
    }
    t
};

/// GPT-2's byte-level alphabet: byte b is written as this code point. Printable Latin-1
/// bytes stand for themselves; the 68 others take 256, 257, ... in byte order.
pub(crate) const BYTE_TO_CHAR: [char; 256] = {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        let cp = if printable {
            b as u32
        } else {
            n += 1;
            255 + n
        };
        t[b] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    t
};

/// The inverse of `BYTE_TO_CHAR`: code points 0..=0x143 to their byte (-1: not in the alphabet).
static CHAR_TO_BYTE: [i16; 0x144] = {
    let mut t = [-1i16; 0x144];
    let mut b = 0usize;
    while b < 256 {
        t[BYTE_TO_CHAR[b] as usize] = b as i16;
        b += 1;
    }
    t
};

pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    CHAR_TO_BYTE.get(c as usize).and_then(|&b| u8::try_from(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert!(Flags::of('a' as u32).is_letter());
        assert!(Flags::of('Ä' as u32).is_letter());
        assert!(Flags::of('我' as u32).is_letter());
        assert!(Flags::of('7' as u32).is_number());
        assert!(Flags::of('½' as u32).is_number());
        assert!(Flags::of(' ' as u32).is_whitespace());
        assert!(Flags::of('\n' as u32).is_whitespace());
        assert!(Flags::of(0x3000).is_whitespace());
        assert!(Flags::of(0x85).is_whitespace());
        assert!(!Flags::of(0x200B).is_whitespace()); // zero-width space is a format char
        assert!(Flags::of('!' as u32).is_punctuation());
        assert!(!Flags::of('$' as u32).is_punctuation());
        assert!(Flags::of(0x0378).is_any() && !Flags::of(0x0378).is_letter()); // unassigned
        assert!(!Flags::NONE.is_any());
    }

    #[test]
    fn byte_alphabet() {
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[b'a' as usize], 'a');
        assert_eq!(BYTE_TO_CHAR[0xAD], 'Ń');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(BYTE_TO_CHAR[b as usize]), Some(b));
        }
        assert_eq!(char_to_byte('€'), None);
    }
}
