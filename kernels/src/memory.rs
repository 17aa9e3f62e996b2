//! The decode roofline: how fast this machine streams memory into the cores. Read the way
//! a fast kernel reads: wide loads into several independent accumulators on every thread
//! (a float sum with one dependency chain is latency-bound and under-reads by a third), and
//! on x86 with the same L2 prefetch 16 KiB ahead as the decode kernels (Sapphire Rapids,
//! `cargo bench --bench roofline`, builds alternated: 22.1-23.1 GiB/s without, 23.2-24.5
//! with; Q8_0 decode over the same bytes 24.9-25.4, so the figure is still a little low).

use rayon::prelude::*;

/// XOR of every 64-bit word (any whole 32-byte chunks; the tail is folded in scalar). The
/// value is returned so the reads cannot be optimised away.
pub fn read_all(data: &[u8]) -> u64 {
    const CHUNK: usize = 1 << 20;
    data.par_chunks(CHUNK).map(read_chunk).reduce(|| 0, |a, b| a ^ b)
}

fn read_chunk(c: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected.
            return unsafe { read_chunk_avx2(c) };
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: NEON is in every aarch64 CPU.
        return unsafe { read_chunk_neon(c) };
    }
    #[allow(unreachable_code)]
    read_chunk_scalar(c)
}

fn read_chunk_scalar(c: &[u8]) -> u64 {
    let mut acc = [0u64; 4];
    let words = c.chunks_exact(32);
    let tail = words.remainder();
    for w in words {
        for (k, a) in acc.iter_mut().enumerate() {
            *a ^= u64::from_le_bytes(w[8 * k..8 * k + 8].try_into().expect("8 bytes"));
        }
    }
    acc.iter().fold(tail.iter().fold(0u64, |h, &b| h.rotate_left(8) ^ b as u64), |h, &a| h ^ a)
}

/// Four 256-bit accumulators, 128 bytes per iteration.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn read_chunk_avx2(c: &[u8]) -> u64 {
    use std::arch::x86_64::*;
    let mut a = [_mm256_setzero_si256(); 4];
    let n = c.len() / 128;
    let p = c.as_ptr() as *const __m256i;
    for i in 0..n {
        // The lines 16 KiB on asked into L2 (as the decode kernels do): the loads alone keep
        // too few misses in flight on some cores (a prefetch never faults).
        let ahead = (p.add(4 * i) as *const i8).wrapping_add(16384);
        _mm_prefetch::<_MM_HINT_T1>(ahead);
        _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64));
        for (k, acc) in a.iter_mut().enumerate() {
            *acc = _mm256_xor_si256(*acc, _mm256_loadu_si256(p.add(4 * i + k)));
        }
    }
    let x = _mm256_xor_si256(_mm256_xor_si256(a[0], a[1]), _mm256_xor_si256(a[2], a[3]));
    let mut out = [0u64; 4];
    _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, x);
    out.iter().fold(read_chunk_scalar(&c[n * 128..]), |h, &v| h ^ v)
}

/// Eight 128-bit accumulators, 128 bytes per iteration (a core of a wide ARM design keeps
/// several 64-byte loads in flight; fewer accumulators would chain the XORs).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn read_chunk_neon(c: &[u8]) -> u64 {
    use std::arch::aarch64::*;
    let mut a = [vdupq_n_u64(0); 8];
    let n = c.len() / 128;
    let p = c.as_ptr();
    for i in 0..n {
        for (k, acc) in a.iter_mut().enumerate() {
            *acc = veorq_u64(*acc, vreinterpretq_u64_u8(vld1q_u8(p.add(128 * i + 16 * k))));
        }
    }
    let x = a.iter().fold(vdupq_n_u64(0), |x, &v| veorq_u64(x, v));
    read_chunk_scalar(&c[n * 128..]) ^ vgetq_lane_u64::<0>(x) ^ vgetq_lane_u64::<1>(x)
}

/// Measured read bandwidth in bytes per second over a buffer of `bytes` (best of `reps`).
pub fn measure_read_bandwidth(bytes: usize, reps: usize) -> f64 {
    let buf = vec![1u8; bytes];
    let mut best = 0f64;
    let mut sink = 0;
    for _ in 0..reps.max(1) {
        let t = std::time::Instant::now();
        sink ^= read_all(&buf);
        best = best.max(bytes as f64 / t.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink);
    best
}

#[cfg(test)]
mod tests {
    #[test]
    fn read_all_sees_every_byte() {
        let mut v = vec![0u8; (3 << 20) + 77];
        assert_eq!(super::read_all(&v), 0);
        let n = v.len();
        v[n - 1] = 1;
        assert_ne!(super::read_all(&v), 0);
        v[n - 1] = 0;
        v[12345] = 0x80;
        assert_ne!(super::read_all(&v), 0);
    }
}
