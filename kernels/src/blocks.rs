//! `#[repr(C)]` block structs, byte-for-byte the layouts of ggml-common.h.
//!
//! Weight blocks hold only byte arrays, so their alignment is 1: a `&[u8]` straight from
//! the memory map (whatever its offset) can be viewed as a block slice without copying.
//! f16 scales are stored as little-endian `[u8; 2]` and read through `f16_le`.

use half::f16;

pub const QK_K: usize = 256;

#[inline(always)]
pub fn f16_le(b: [u8; 2]) -> f32 {
    f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

#[inline(always)]
pub fn f16_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

/// A block type whose alignment is 1 and whose every bit pattern is valid.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, contain only `u8`/`i8` arrays, and so have size
/// `BYTES`, alignment 1 and no padding.
pub unsafe trait Block: Copy + 'static {
    const ELEMS: usize;
    const BYTES: usize;
}

macro_rules! block {
    ($(#[$m:meta])* $name:ident, $elems:expr, $bytes:expr, { $($f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name { $(pub $f: $t),* }
        const _: () = assert!(std::mem::size_of::<$name>() == $bytes);
        const _: () = assert!(std::mem::align_of::<$name>() == 1);
        // SAFETY: repr(C), byte arrays only (checked above: size and alignment 1).
        unsafe impl Block for $name { const ELEMS: usize = $elems; const BYTES: usize = $bytes; }
        impl Default for $name {
            fn default() -> Self {
                // SAFETY: all-zero bytes are a valid value of a byte-array struct.
                unsafe { std::mem::zeroed() }
            }
        }
    };
}

block!(
    /// 32 weights: x = d * (q - 8), q in 0..16; byte j holds q[j] (low nibble) and q[j+16].
    BlockQ4_0, 32, 18, { d: [u8; 2], qs: [u8; 16] });
block!(
    /// 32 weights: x = d * q + m, q in 0..16; nibbles as Q4_0.
    BlockQ4_1, 32, 20, { d: [u8; 2], m: [u8; 2], qs: [u8; 16] });
block!(
    /// 32 weights: x = d * (q - 16), q 5 bits: low nibble as Q4_0, bit 4 of q[j] in qh bit j.
    BlockQ5_0, 32, 22, { d: [u8; 2], qh: [u8; 4], qs: [u8; 16] });
block!(
    /// 32 weights: x = d * q + m, q 5 bits as Q5_0.
    BlockQ5_1, 32, 24, { d: [u8; 2], m: [u8; 2], qh: [u8; 4], qs: [u8; 16] });
block!(
    /// 32 values: x = d * q, q in -127..=127.
    BlockQ8_0, 32, 34, { d: [u8; 2], qs: [i8; 32] });
block!(
    /// 32 activations: x = d * q, with s = d * sum(q) for the `+ m` term of Q4_1/Q5_1.
    BlockQ8_1, 32, 36, { d: [u8; 2], s: [u8; 2], qs: [i8; 32] });
block!(
    /// 256 weights in 16 groups of 16: x = d * (sc & 15) * q - dmin * (sc >> 4), q 2 bits.
    BlockQ2K, QK_K, 84, { scales: [u8; 16], qs: [u8; 64], d: [u8; 2], dmin: [u8; 2] });
block!(
    /// 256 weights in 16 groups of 16: x = d * (sc - 32) * (q - 4 * !hbit), q 3 bits,
    /// 6-bit scales packed in 12 bytes.
    BlockQ3K, QK_K, 110, { hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: [u8; 2] });
block!(
    /// 256 weights in 8 groups of 32: x = d * sc * q - dmin * m, 6-bit sc/m packed in 12 bytes.
    BlockQ4K, QK_K, 144, { d: [u8; 2], dmin: [u8; 2], scales: [u8; 12], qs: [u8; 128] });
block!(
    /// As Q4_K with a fifth bit per weight in qh.
    BlockQ5K, QK_K, 176, { d: [u8; 2], dmin: [u8; 2], scales: [u8; 12], qh: [u8; 32], qs: [u8; 128] });
block!(
    /// 256 weights in 16 groups of 16: x = d * sc * (q - 32), q 6 bits (4 in ql, 2 in qh).
    BlockQ6K, QK_K, 210, { ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: [u8; 2] });
block!(
    /// 32 weights: x = d * KVALUES_IQ4NL[q], q 4 bits laid out as Q4_0.
    BlockIQ4NL, 32, 18, { d: [u8; 2], qs: [u8; 16] });
block!(
    /// 256 weights in 8 groups of 32: x = d * (ls - 32) * KVALUES_IQ4NL[q], 6-bit ls split
    /// between scales_l (4 bits) and scales_h (2 bits).
    BlockIQ4XS, QK_K, 136, { d: [u8; 2], scales_h: [u8; 2], scales_l: [u8; 4], qs: [u8; 128] });

block!(
    /// Q4_0 blocks of 8 consecutive rows at one block column, interleaved at load (see
    /// `repack`): the 8 scales, then 4 chunks of 32 bytes; chunk c holds bytes 4c..4c+4 of
    /// each row's qs (row r at 4r), so one 256-bit register carries 4 weights of each of
    /// the 8 rows and the dot product accumulates one row per 32-bit lane.
    BlockQ4_0x8, 256, 144, { d: [u8; 16], qs: [u8; 128] });

block!(
    /// Q4_K blocks of 8 consecutive rows at one block column, interleaved at load (see
    /// `repack`): the 8 d, the 8 dmin, the 6-bit scales and mins unpacked to bytes (index
    /// 8 * group + row), then the quants: qs[256p + 32c + 4r..+4] holds bytes 32p + 4c..+4
    /// of row r's qs (low nibbles: group 2p, high: group 2p + 1).
    BlockQ4Kx8, 256, 1184, { d: [u8; 16], dmin: [u8; 16], scales: [u8; 64], mins: [u8; 64], qs: [u8; 1024] });

block!(
/// Q5_K blocks of 8 consecutive rows, interleaved as `BlockQ4Kx8` (d, dmin, unpacked
/// scales and mins, qs the same way), plus the fifth bits: qh[32c + 4r..+4] holds bytes
/// 4c..4c+4 of row r's qh (bit g of byte l: weight 32g + l).
BlockQ5Kx8, 256, 1440, {
    d: [u8; 16], dmin: [u8; 16], scales: [u8; 64], mins: [u8; 64], qh: [u8; 256], qs: [u8; 1024]
});

/// The fields Q4_Kx8 and Q5_Kx8 share, and Q5_K's fifth bits: one unpacking code serves
/// both (the prefill panels).
pub trait KBlockX8 {
    fn d(&self) -> &[u8; 16];
    fn dmin(&self) -> &[u8; 16];
    fn scales(&self) -> &[u8; 64];
    fn mins(&self) -> &[u8; 64];
    fn qs(&self) -> &[u8; 1024];
    /// Q5_K's fifth bits (`BlockQ5Kx8::qh`); None for Q4_K.
    fn qh(&self) -> Option<&[u8; 256]>;
}

macro_rules! k_block_x8 {
    ($t:ty, |$b:ident| $qh:expr) => {
        impl KBlockX8 for $t {
            fn d(&self) -> &[u8; 16] {
                &self.d
            }
            fn dmin(&self) -> &[u8; 16] {
                &self.dmin
            }
            fn scales(&self) -> &[u8; 64] {
                &self.scales
            }
            fn mins(&self) -> &[u8; 64] {
                &self.mins
            }
            fn qs(&self) -> &[u8; 1024] {
                &self.qs
            }
            fn qh(&self) -> Option<&[u8; 256]> {
                let $b = self;
                $qh
            }
        }
    };
}

k_block_x8!(BlockQ4Kx8, |_b| None);
k_block_x8!(BlockQ5Kx8, |b| Some(&b.qh));

block!(
    /// Q8_0 blocks of 8 consecutive rows at one block column, interleaved at load (see
    /// `repack`): the 8 scales, then qs[32k + 4r..+4] = bytes 4k..4k+4 of row r's qs.
    BlockQ8_0x8, 256, 272, { d: [u8; 16], qs: [u8; 256] });

block!(
    /// Q4_1 blocks of 8 rows interleaved as `BlockQ4_0x8`, with the 8 m after the 8 d.
    BlockQ4_1x8, 256, 160, { d: [u8; 16], m: [u8; 16], qs: [u8; 128] });

block!(
    /// Q5_0 blocks of 8 rows interleaved as `BlockQ4_0x8`, with each row's 32 high bits
    /// (qh) at 4r after the 8 d.
    BlockQ5_0x8, 256, 176, { d: [u8; 16], qh: [u8; 32], qs: [u8; 128] });

block!(
    /// Q5_1 blocks of 8 rows: `BlockQ5_0x8`'s qh and qs, with the 8 m after the 8 d (as
    /// `BlockQ4_1x8`).
    BlockQ5_1x8, 256, 192, { d: [u8; 16], m: [u8; 16], qh: [u8; 32], qs: [u8; 128] });

block!(
    /// Q6_K blocks of 8 consecutive rows at one block column, interleaved at load (see
    /// `repack`): the 8 d, the scales (index 8 * group + row), then ql[512h + 256s + 32c +
    /// 4r..+4] = bytes 64h + 32s + 4c..+4 of row r's ql, and qh[256h + 32c + 4r..+4] =
    /// bytes 32h + 4c..+4 of row r's qh.
    BlockQ6Kx8, 256, 1680, { d: [u8; 16], scales: [u8; 128], ql: [u8; 1024], qh: [u8; 512] });

block!(
    /// Q2_K blocks of 8 consecutive rows at one block column, interleaved at load (see
    /// `repack`): the 8 d, the 8 dmin, the scale bytes (sc | m << 4, index 8 * group + row),
    /// and qs[256h + 32c + 4r..+4] = bytes 32h + 4c..+4 of row r's qs (as `BlockQ3Kx8`).
    BlockQ2Kx8, 256, 672, { d: [u8; 16], dmin: [u8; 16], scales: [u8; 128], qs: [u8; 512] });

block!(
    /// Q3_K blocks of 8 consecutive rows at one block column, interleaved at load (see
    /// `repack`): the 8 d, the signed group scales sc - 32 (index 8 * group + row, as
    /// `BlockQ6Kx8`), qs[256h + 32c + 4r..+4] = bytes 32h + 4c..+4 of row r's qs, and
    /// hmask[32c + 4r..+4] = bytes 4c..4c+4 of row r's hmask.
    BlockQ3Kx8, 256, 912, { d: [u8; 16], scales: [u8; 128], qs: [u8; 512], hmask: [u8; 256] });

block!(
    /// IQ4_XS blocks of 8 consecutive rows at one block column, interleaved at load (see
    /// `repack`): the 8 d, the signed group scales ls - 32 (index 8 * group + row), then
    /// qs[128g + 32c + 4r..+4] = bytes 16g + 4c..+4 of row r's qs (group g's codebook indices:
    /// low nibbles for values 4c..4c+4 of the group, high nibbles for 16 + 4c..), as Q4_0x8
    /// lays out each block of 32.
    BlockIQ4XSx8, 256, 1104, { d: [u8; 16], scales: [i8; 64], qs: [u8; 1024] });

/// The non-linear 4-bit codebook of IQ4_NL and IQ4_XS.
pub const KVALUES_IQ4NL: [i8; 16] =
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// Activation block for K-type dot products: 256 values, x = d * q, with bsums[i] the sum
/// of q over group i of 16 (for the K types' minimum terms). Produced by us, never read
/// from a file, so it keeps its natural f32/i16 layout.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K { d: 0.0, qs: [0; QK_K], bsums: [0; QK_K / 16] }
    }
}

/// Activation block for the interleaved Q4_0/Q5_0/Q8_0 kernels: a Q8_0 block (same
/// quantization, `d` the f16 scale's value) that carries the sum of its q, so that a
/// kernel taking an offset off (8 for Q4_0, 16 for Q5_0, 128 for Q8_0's unsigned trick)
/// reads the sum instead of adding 32 bytes again for every group of 8 weight rows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockQ8_0S {
    pub d: f32,
    pub sum: i32,
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0S>() == 40);

/// View bytes as blocks. `None` if the length is not a whole number of blocks.
pub fn as_blocks<B: Block>(bytes: &[u8]) -> Option<&[B]> {
    if !bytes.len().is_multiple_of(B::BYTES) {
        return None;
    }
    // SAFETY: B has alignment 1, size BYTES and accepts every bit pattern (trait contract);
    // the length is a whole number of blocks.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const B, bytes.len() / B::BYTES) })
}

/// View bytes as mutable blocks (None unless the length is a whole number of blocks).
pub fn as_blocks_mut<B: Block>(bytes: &mut [u8]) -> Option<&mut [B]> {
    if !bytes.len().is_multiple_of(B::BYTES) {
        return None;
    }
    // SAFETY: as `as_blocks`: alignment 1, size BYTES, every bit pattern valid; the borrow of
    // the bytes is handed on, so nothing else reads or writes them meanwhile.
    Some(unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr() as *mut B, bytes.len() / B::BYTES) })
}

/// View blocks as bytes.
pub fn as_bytes<B: Block>(blocks: &[B]) -> &[u8] {
    // SAFETY: B is plain bytes without padding (trait contract).
    unsafe { std::slice::from_raw_parts(blocks.as_ptr() as *const u8, std::mem::size_of_val(blocks)) }
}

/// View blocks as mutable bytes.
pub fn as_bytes_mut<B: Block>(blocks: &mut [B]) -> &mut [u8] {
    // SAFETY: B is plain bytes without padding, and every bit pattern is valid.
    unsafe { std::slice::from_raw_parts_mut(blocks.as_mut_ptr() as *mut u8, std::mem::size_of_val(blocks)) }
}
