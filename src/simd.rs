//! Vectorisable numerics for the hot paths.
//!
//! The functions here use only arithmetic, comparisons and bit manipulation, so loops over slices
//! that call them compile to SIMD code. Hot loops are compiled three times by [`multiversion!`]
//! — AVX-512, AVX2 + FMA and portable, chosen at run time — so the portable binary still uses
//! wide vectors where the CPU has them.
//!
//! Accuracy (checked in the tests against the standard library over their whole domains):
//! `exp_neg` (f64) ≤ 4e−16 relative on [−708, 0] (0 below −708, where e^x < 1e−307: a softmax
//! weight that small is irrelevant); `ln_unit_f32` ≤ 3e−7 relative-to-max(1, |ln|) on (0, 1];
//! `sincos_quarter_pi_f32` ≤ 2e−7 absolute.

/// Whether the CPU has AVX2 and FMA (cached by the standard library).
#[inline(always)]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has AVX-512 F and DQ (cached by the standard library).
#[inline(always)]
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && has_avx2()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Run a block of code compiled for the best vector extension the CPU has, chosen at run time:
/// AVX-512 (F, DQ), AVX2 + FMA, or the portable baseline. The code is written once as the body
/// of a function with explicit parameters (inner functions cannot see the caller's generics):
///
/// ```ignore
/// crate::multiversion!((a: &[f64], b: &mut [f64]) -> usize { kernel(a, b) })
/// ```
///
/// The body should call `#[inline(always)]` code so that it is compiled with the features.
#[macro_export]
macro_rules! multiversion {
    (($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty $body:block) => {{
        #[allow(clippy::too_many_arguments)]
        #[inline(always)]
        fn portable($($arg: $ty),*) -> $ret $body
        #[cfg(target_arch = "x86_64")]
        {
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) -> $ret $body
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) -> $ret $body
            if $crate::simd::has_avx512() {
                // SAFETY: the CPU supports every feature the function is compiled for.
                unsafe { avx512($($arg),*) }
            } else if $crate::simd::has_avx2() {
                // SAFETY: as above.
                unsafe { avx2($($arg),*) }
            } else {
                portable($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            portable($($arg),*)
        }
    }};
}

/// Σ a_i·b_i in f64 with eight independent partial sums, so the loop vectorises (a plain
/// sequential sum cannot be reordered by the compiler).
#[inline(always)]
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Σ a_i in f64 with eight partial sums (see [`dot`]).
#[inline(always)]
pub fn sum(a: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let ac = a.chunks_exact(8);
    let tail: f64 = ac.remainder().iter().sum();
    for x in ac {
        for k in 0..8 {
            acc[k] += x[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Round to nearest (ties to even) for |x| < 2^51 by adding and removing 1.5·2^52: plain
/// arithmetic, so it vectorises even without SSE4.1's `roundpd`.
#[inline(always)]
pub fn round_small(x: f64) -> f64 {
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    (x + MAGIC) - MAGIC
}

/// e^x for x ≤ 0 (the softmax-weight range); returns 0 for x < −708 and for NaN inputs' lanes it
/// returns NaN. Cody–Waite reduction x = n·ln2 + r, |r| ≤ ln2/2, degree-13 Taylor polynomial.
#[inline(always)]
pub fn exp_neg(x: f64) -> f64 {
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // ln 2, upper bits
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // ln 2 − LN2_HI
    let xc = x.max(-708.0);
    let n = round_small(xc * std::f64::consts::LOG2_E);
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // Horner on Taylor coefficients 1/k!, k = 0..13
    let mut p = 1.0 / 6_227_020_800.0;
    p = p * r + 1.0 / 479_001_600.0;
    p = p * r + 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // 2^n without float→int conversion: n + 1023 lands in the low mantissa bits of 2^52 + (n + 1023)
    let scale = f64::from_bits((n + (1023.0 + 4_503_599_627_370_496.0)).to_bits() << 52);
    if x < -708.0 {
        0.0
    } else {
        p * scale
    }
}

/// ln(u) in f32 for u in (0, 1] (normal, non-zero inputs). u = m·2^e with m in [√½, √2);
/// ln m = f − f²/2 + f³·P(f), f = m − 1, with the degree-8 minimax P of Cephes' `logf`
/// (relative error ~1e−7 on that range), evaluated with fused multiply-adds: no division. Call it
/// from code compiled with FMA ([`multiversion!`]); elsewhere `mul_add` is a library call.
#[inline(always)]
pub fn ln_unit_f32(u: f32) -> f32 {
    let bits = u.to_bits();
    // biased exponent as f32 via the 2^23 trick (integer→float conversion is avoided)
    let biased = f32::from_bits(0x4b00_0000 | ((bits >> 23) & 0xff)) - 8_388_608.0;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > std::f32::consts::SQRT_2;
    let m = if big { m * 0.5 } else { m };
    let e = biased - 127.0 + if big { 1.0 } else { 0.0 };
    let f = m - 1.0;
    let mut p = 7.037_683_6e-2_f32;
    for c in [
        -1.151_461e-1,
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_4e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ] {
        p = p.mul_add(f, c);
    }
    let f2 = f * f;
    let r = (f2 * f).mul_add(p, (-0.5f32).mul_add(f2, f));
    e.mul_add(std::f32::consts::LN_2, r)
}

/// (sin(πt/4), cos(πt/4)) in f32 for t in [−1, 1]: Taylor polynomials in t (sine to degree 9,
/// cosine to degree 10; truncation < 3e−9), with fused multiply-adds (see [`ln_unit_f32`]).
#[inline(always)]
pub fn sincos_quarter_pi_f32(t: f32) -> (f32, f32) {
    const A: f32 = std::f32::consts::FRAC_PI_4;
    let a2 = A * A;
    let t2 = t * t;
    // sin(At) = At·(1 − (At)²/3! + (At)⁴/5! − …), each coefficient carrying its power of A
    let ps = (a2 * a2 * a2 * a2 / 362_880.0)
        .mul_add(t2, -a2 * a2 * a2 / 5_040.0)
        .mul_add(t2, a2 * a2 / 120.0)
        .mul_add(t2, -a2 / 6.0)
        .mul_add(t2, 1.0);
    let pc = (-a2 * a2 * a2 * a2 * a2 / 3_628_800.0)
        .mul_add(t2, a2 * a2 * a2 * a2 / 40_320.0)
        .mul_add(t2, -a2 * a2 * a2 / 720.0)
        .mul_add(t2, a2 * a2 / 24.0)
        .mul_add(t2, -a2 / 2.0)
        .mul_add(t2, 1.0);
    ((A * t) * ps, pc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_sum_match_sequential() {
        for n in [0, 1, 7, 8, 9, 64, 65, 100] {
            let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..n).map(|i| (i as f64 * 1.3).cos()).collect();
            let d: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - d).abs() < 1e-12, "n = {n}");
            assert!((sum(&a) - a.iter().sum::<f64>()).abs() < 1e-12, "n = {n}");
        }
    }

    #[test]
    fn exp_matches_std() {
        let mut worst: f64 = 0.0;
        for i in 0..=200_000 {
            let x = -708.0 * (i as f64 / 200_000.0).powi(2);
            let rel = (exp_neg(x) - x.exp()).abs() / x.exp();
            worst = worst.max(rel);
        }
        assert!(worst < 4e-16, "exp worst relative error {worst:e}");
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(-709.0), 0.0);
        assert_eq!(exp_neg(f64::NEG_INFINITY), 0.0);
    }

    #[test]
    fn ln_f32_matches_std() {
        let mut worst: f64 = 0.0;
        for i in 0..=300_000u32 {
            let u = (i as f32 + 1.0) / 300_001.0;
            for v in [u, u * 1e-6, 1.0 - u * 1e-3] {
                let err = (f64::from(ln_unit_f32(v)) - f64::from(v).ln()).abs()
                    / f64::from(v).ln().abs().max(1.0);
                worst = worst.max(err);
            }
        }
        assert!(worst < 3e-7, "ln worst error {worst:e}");
        assert_eq!(ln_unit_f32(1.0), 0.0);
    }

    #[test]
    fn sincos_f32_matches_std() {
        let mut worst: f64 = 0.0;
        for i in 0..=300_000 {
            let t = (i as f32 / 150_000.0 - 1.0).clamp(-1.0, 1.0);
            let (s, c) = sincos_quarter_pi_f32(t);
            let a = std::f64::consts::FRAC_PI_4 * f64::from(t);
            worst = worst
                .max((f64::from(s) - a.sin()).abs())
                .max((f64::from(c) - a.cos()).abs());
        }
        assert!(worst < 2e-7, "sincos worst absolute error {worst:e}");
    }
}
