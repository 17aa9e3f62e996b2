//! Zeroed f32 buffers in memory that may be mapped by 2 MiB pages (transparent huge pages,
//! where the system has them). A prefill batch's activations are megabytes written and read
//! row by row across the whole buffer: in small pages, each of a tile's 16 output rows is
//! another page and another TLB miss (1B Q4_K_M pp512 with huge pages for these: +2-7%).

use std::ops::{Deref, DerefMut};

/// `len` zeroed f32s, in an anonymous map advised for huge pages (a plain `Vec` where the
/// system refuses the map).
pub enum Buf {
    Map(memmap2::MmapMut, usize),
    Vec(Vec<f32>),
}

impl Buf {
    pub fn zeroed(len: usize) -> Buf {
        if len == 0 {
            return Buf::Vec(Vec::new());
        }
        match memmap2::MmapMut::map_anon(len * std::mem::size_of::<f32>()) {
            Ok(map) => {
                // Advice only: where huge pages are off, the buffer stays in small pages.
                #[cfg(target_os = "linux")]
                let _ = map.advise(memmap2::Advice::HugePage);
                Buf::Map(map, len)
            }
            Err(_) => Buf::Vec(vec![0.0; len]),
        }
    }
}

impl Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            // SAFETY: the map is page-aligned (so aligned for f32) and holds len * 4 bytes,
            // zeroed by the system (0.0) or written only as f32 through `deref_mut`; every bit
            // pattern is an f32; the slice borrows the map.
            Buf::Map(m, len) => unsafe { std::slice::from_raw_parts(m.as_ptr() as *const f32, *len) },
            Buf::Vec(v) => v,
        }
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        match self {
            // SAFETY: as in `deref`, borrowed mutably with the map.
            Buf::Map(m, len) => unsafe { std::slice::from_raw_parts_mut(m.as_mut_ptr() as *mut f32, *len) },
            Buf::Vec(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_reads_and_writes_like_a_vec() {
        let mut b = Buf::zeroed(3 << 20);
        assert_eq!(b.len(), 3 << 20);
        assert!(b.iter().all(|&v| v == 0.0));
        b[12345] = 2.5;
        let last = b.len() - 1;
        b[last] = -1.0;
        assert_eq!((b[12345], b[last], b[12344]), (2.5, -1.0, 0.0));
        assert!(Buf::zeroed(0).is_empty());
    }
}
