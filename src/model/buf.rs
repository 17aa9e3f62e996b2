//! Zeroed buffers in memory that may be mapped by 2 MiB pages (transparent huge pages, where
//! the system has them). A prefill batch's activations are megabytes written and read row by
//! row across the whole buffer: in small pages, each of a tile's 16 output rows is another
//! page and another TLB miss (1B Q4_K_M pp512 with huge pages for these: +2-6%).

use std::ops::{Deref, DerefMut};

/// Element types whose all-zero bytes are a value (so that fresh zeroed pages hold zeros).
pub trait Zeroable: Copy {}
impl Zeroable for f32 {}
impl Zeroable for half::f16 {}

/// `len` zeroed elements, in an anonymous map advised for huge pages (a plain `Vec` where
/// the system refuses the map).
pub enum Buf<T: Zeroable> {
    Map(memmap2::MmapMut, usize, std::marker::PhantomData<T>),
    Vec(Vec<T>),
}

impl<T: Zeroable + Default> Buf<T> {
    pub fn zeroed(len: usize) -> Buf<T> {
        let bytes = len * std::mem::size_of::<T>();
        if bytes == 0 {
            return Buf::Vec(Vec::new());
        }
        match memmap2::MmapMut::map_anon(bytes) {
            Ok(map) => {
                // Advice only: where huge pages are off, the buffer stays in small pages.
                #[cfg(target_os = "linux")]
                let _ = map.advise(memmap2::Advice::HugePage);
                Buf::Map(map, len, std::marker::PhantomData)
            }
            Err(_) => Buf::Vec(vec![T::default(); len]),
        }
    }
}

impl<T: Zeroable> Deref for Buf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            // SAFETY: the map is page-aligned (so aligned for T), holds len * size_of::<T>()
            // bytes, zeroed by the system or written only as T through `deref_mut`, and all
            // zero bytes are a T (`Zeroable`); the slice borrows the map.
            Buf::Map(m, len, _) => unsafe { std::slice::from_raw_parts(m.as_ptr() as *const T, *len) },
            Buf::Vec(v) => v,
        }
    }
}

impl<T: Zeroable> DerefMut for Buf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            // SAFETY: as in `deref`, borrowed mutably with the map.
            Buf::Map(m, len, _) => unsafe { std::slice::from_raw_parts_mut(m.as_mut_ptr() as *mut T, *len) },
            Buf::Vec(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_reads_and_writes_like_a_vec() {
        let mut b: Buf<f32> = Buf::zeroed(3 << 20);
        assert_eq!(b.len(), 3 << 20);
        assert!(b.iter().all(|&v| v == 0.0));
        b[12345] = 2.5;
        let last = b.len() - 1;
        b[last] = -1.0;
        assert_eq!((b[12345], b[last], b[12344]), (2.5, -1.0, 0.0));
        let h: Buf<half::f16> = Buf::zeroed(7);
        assert!(h.iter().all(|v| v.to_f32() == 0.0));
        assert!(Buf::<f32>::zeroed(0).is_empty());
    }
}
