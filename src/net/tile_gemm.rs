//! AVX-512 matrix products for the fused network kernels' common case: a right operand stored
//! row-major with unit column stride (a weight `W` used as `x·W`, or the second factor of a
//! weight gradient `gyᵀ·x`) and a multiple of 64 output columns. No packing: each 6 × 64 tile of
//! the output is accumulated in 24 registers over the whole inner dimension, reading B's row
//! segment (four vectors) and broadcasting A's six elements per step, so A can have any strides
//! (`x` row-major, or `gy` read transposed). About 5 % faster than the `gemm` crate's packed
//! kernels on this machine's `[768 × 128]·[128 × 128]` products, and the operands are read once
//! instead of being copied into packing buffers first.
//!
//! Rounding: each output element is one sequential sum over the inner dimension (an FMA chain),
//! so results can differ from the `gemm` crate's in the last bits.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output columns per tile.
pub const COLS: usize = 64;

/// Whether [`product`] runs on this CPU (AVX-512 F).
#[inline]
pub fn available() -> bool {
    crate::simd::has_avx512()
}

/// dst (m × n, row stride `dst_rs`, unit column stride) = [dst +] A·B, where A(i, p) is at
/// `a + i·a_rs + p·a_ks` and B(p, j) at `b + p·b_rs + j`; `n` must be a multiple of [`COLS`].
///
/// # Safety
/// The CPU has AVX-512 F ([`available`]); every element addressed lies inside its allocation.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    acc: bool,
    a: *const f32,
    a_rs: usize,
    a_ks: usize,
    b: *const f32,
    b_rs: usize,
) {
    debug_assert_eq!(n % COLS, 0);
    const R: usize = 6;
    let full = m - m % R;
    for j in (0..n).step_by(COLS) {
        let bj = b.add(j);
        let mut i = 0;
        while i < full {
            tile::<R>(
                k,
                a.add(i * a_rs),
                a_rs,
                a_ks,
                bj,
                b_rs,
                dst.add(i * dst_rs + j),
                dst_rs,
                acc,
            );
            i += R;
        }
        let (ai, ci) = (a.add(full * a_rs), dst.add(full * dst_rs + j));
        match m - full {
            1 => tile::<1>(k, ai, a_rs, a_ks, bj, b_rs, ci, dst_rs, acc),
            2 => tile::<2>(k, ai, a_rs, a_ks, bj, b_rs, ci, dst_rs, acc),
            3 => tile::<3>(k, ai, a_rs, a_ks, bj, b_rs, ci, dst_rs, acc),
            4 => tile::<4>(k, ai, a_rs, a_ks, bj, b_rs, ci, dst_rs, acc),
            5 => tile::<5>(k, ai, a_rs, a_ks, bj, b_rs, ci, dst_rs, acc),
            _ => {}
        }
    }
}

/// One `R × 64` output tile: Σ_p A(r, p)·B(p, 0..64), stored or added to `c`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const R: usize>(
    k: usize,
    a: *const f32,
    a_rs: usize,
    a_ks: usize,
    b: *const f32,
    b_rs: usize,
    c: *mut f32,
    c_rs: usize,
    acc: bool,
) {
    let mut t = [[_mm512_setzero_ps(); 4]; R];
    let (mut ap, mut bp) = (a, b);
    for _ in 0..k {
        let bv = [
            _mm512_loadu_ps(bp),
            _mm512_loadu_ps(bp.add(16)),
            _mm512_loadu_ps(bp.add(32)),
            _mm512_loadu_ps(bp.add(48)),
        ];
        for (r, row) in t.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*ap.add(r * a_rs));
            for (q, v) in row.iter_mut().enumerate() {
                *v = _mm512_fmadd_ps(av, bv[q], *v);
            }
        }
        ap = ap.add(a_ks);
        bp = bp.add(b_rs);
    }
    for (r, row) in t.iter().enumerate() {
        for (q, &v) in row.iter().enumerate() {
            let cp = c.add(r * c_rs + 16 * q);
            let v = if acc {
                _mm512_add_ps(_mm512_loadu_ps(cp), v)
            } else {
                v
            };
            _mm512_storeu_ps(cp, v);
        }
    }
}
