//! Seeded, reproducible random streams.
//!
//! Every parallel work item (e.g. one point of a DEM-target batch) draws from its own stream
//! derived from `(seed, stream index)`, so results do not depend on the number of threads or on
//! the order in which rayon schedules the work.

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// The generator used throughout idem.
pub type Rng = Xoshiro256PlusPlus;

/// SplitMix64 finaliser: a bijective 64-bit mixer with good avalanche.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A generator for stream `index` of `seed`. Distinct `(seed, index)` pairs give unrelated streams.
#[inline]
pub fn stream(seed: u64, index: u64) -> Rng {
    let key = mix64(seed ^ mix64(index.wrapping_add(0x9E37_79B9_7F4A_7C15)));
    Rng::seed_from_u64(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(stream(7, 3), |r, _: u64| Some(r.random::<u64>()))
            .collect();
        let b: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(stream(7, 3), |r, _: u64| Some(r.random::<u64>()))
            .collect();
        let c: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(stream(7, 4), |r, _: u64| Some(r.random::<u64>()))
            .collect();
        let d: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(stream(8, 3), |r, _: u64| Some(r.random::<u64>()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }
}

/// Lanes of [`NormalStream`].
pub const NORMAL_LANES: usize = 16;

/// A fast source of standard normal f32 draws for the hot paths: sixteen independent xoshiro128++
/// generators advanced in lock-step (vectorisable) feeding the Box–Muller transform
/// z = √(−2 ln u₁)·(cos θ, sin θ), θ uniform, with the polynomial `ln`/`sincos` of
/// [`crate::simd`] (the angle from a quarter turn and two sign bits, see `chunk`). About 2.5×
/// faster than a scalar ziggurat here.
///
/// u₁ = (U₃₁ + 1)·2⁻³¹ with U₃₁ uniform on 31 bits, so u₁ ∈ (0, 1] and |z| ≤ 6.56: the normal's
/// tail beyond 6.56σ (probability 5e−11) is not represented. θ has 25 bits of resolution.
#[derive(Clone, Debug)]
#[allow(clippy::needless_range_loop)] // lane-indexed loops are what vectorises
pub struct NormalStream {
    s: [[u32; NORMAL_LANES]; 4],
}

#[allow(clippy::needless_range_loop)] // lane-indexed loops are what vectorises
impl NormalStream {
    /// The stream for `(seed, index)`.
    pub fn new(seed: u64, index: u64) -> Self {
        let mut key = mix64(
            mix64(seed ^ 0xD1B5_4A32_D192_ED03) ^ mix64(index.wrapping_add(0x8CB9_2BA7_2F3D_8DD7)),
        );
        let mut s = [[0u32; NORMAL_LANES]; 4];
        for lane in 0..NORMAL_LANES {
            for pair in 0..2 {
                key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let v = mix64(key);
                s[2 * pair][lane] = v as u32;
                s[2 * pair + 1][lane] = (v >> 32) as u32 | 1; // never an all-zero state
            }
        }
        Self { s }
    }

    #[inline(always)]
    fn next_u32s(&mut self) -> [u32; NORMAL_LANES] {
        let [s0, s1, s2, s3] = &mut self.s;
        let mut out = [0u32; NORMAL_LANES];
        for l in 0..NORMAL_LANES {
            out[l] = s0[l].wrapping_add(s3[l]).rotate_left(7).wrapping_add(s0[l]);
            let t = s1[l] << 9;
            s2[l] ^= s0[l];
            s3[l] ^= s1[l];
            s1[l] ^= s2[l];
            s0[l] ^= s3[l];
            s2[l] ^= t;
            s3[l] = s3[l].rotate_left(11);
        }
        out
    }

    /// 2 × [`NORMAL_LANES`] normals from two 32-bit draws per lane: u₁ = (U₃₁ + 1)·2⁻³¹ from the
    /// first, and from the second an angle θ = π/4·(1 + t) with t uniform on [−1, 1) (23 bits)
    /// plus two sign bits. (±cos θ, ±sin θ) with independent signs is uniform on the circle (the
    /// signs reflect the first quadrant into the other three), and cos θ = (cos φ − sin φ)/√2,
    /// sin θ = (cos φ + sin φ)/√2 with φ = πt/4, so the √2 folds into the radius:
    /// √(−2 ln u₁)/√2 = √(−ln u₁).
    #[inline(always)]
    fn chunk(&mut self, out: &mut [f32; 2 * NORMAL_LANES]) {
        let a = self.next_u32s();
        let b = self.next_u32s();
        for l in 0..NORMAL_LANES {
            let u1 = ((a[l] >> 1) as i32 as f32 + 1.0) * (1.0 / 2_147_483_648.0); // (0, 1]
            let t = f32::from_bits(0x4000_0000 | (b[l] & 0x007f_ffff)) - 3.0; // [−1, 1)
            let r = (-crate::simd::ln_unit_f32(u1)).sqrt();
            let (s, c) = crate::simd::sincos_quarter_pi_f32(t);
            let x = r * (c - s);
            let y = r * (c + s);
            out[l] = f32::from_bits(x.to_bits() ^ (b[l] & 0x8000_0000));
            out[NORMAL_LANES + l] = f32::from_bits(y.to_bits() ^ ((b[l] << 1) & 0x8000_0000));
        }
    }

    /// Fill `out` with independent standard normal draws, compiled for the CPU's vector
    /// extensions (the polynomials use fused multiply-adds: without the FMA unit they would be
    /// library calls). Inside a function that is already [`crate::multiversion!`]ed, use
    /// [`NormalStream::fill_inline`]; both give the same numbers.
    pub fn fill(&mut self, out: &mut [f32]) {
        let this = self;
        crate::multiversion!((this: &mut NormalStream, out: &mut [f32]) -> () {
            this.fill_inline(out)
        })
    }

    /// [`NormalStream::fill`] inlined into the caller.
    #[inline(always)]
    pub fn fill_inline(&mut self, out: &mut [f32]) {
        let mut chunks = out.chunks_exact_mut(2 * NORMAL_LANES);
        for c in &mut chunks {
            let c: &mut [f32; 2 * NORMAL_LANES] = c.try_into().expect("exact chunk");
            self.chunk(c);
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut tmp = [0.0; 2 * NORMAL_LANES];
            self.chunk(&mut tmp);
            let n = rest.len();
            rest.copy_from_slice(&tmp[..n]);
        }
    }
}

#[cfg(test)]
mod normal_tests {
    use super::*;

    #[test]
    fn normal_stream_moments_and_tails() {
        let mut g = NormalStream::new(42, 7);
        let n = 2_000_000;
        let mut z32 = vec![0.0f32; n];
        g.fill(&mut z32[..n - 3]); // exercise the remainder path too
        g.fill(&mut z32[n - 3..]);
        let z: Vec<f64> = z32.iter().map(|&v| f64::from(v)).collect();
        let mean = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        let kurt = z.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
        // standard errors: mean 7e-4, var 1e-3, kurtosis ~3.5e-3
        assert!(mean.abs() < 4e-3, "mean {mean}");
        assert!((var - 1.0).abs() < 6e-3, "var {var}");
        assert!((kurt - 3.0).abs() < 0.03, "kurtosis {kurt}");
        // P(|z| > 3) = 0.0026998 (sd of the frequency 3.7e-5)
        let tail = z.iter().filter(|v| v.abs() > 3.0).count() as f64 / n as f64;
        assert!((tail - 0.0026998).abs() < 2.5e-4, "tail {tail}");
        // Kolmogorov–Smirnov against Φ on a subsample
        let mut s: Vec<f64> = z.iter().step_by(20).cloned().collect();
        s.sort_by(f64::total_cmp);
        let phi = |x: f64| 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
        let m = s.len() as f64;
        let d = s
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                (phi(x) - i as f64 / m)
                    .abs()
                    .max((phi(x) - (i + 1) as f64 / m).abs())
            })
            .fold(0.0, f64::max);
        assert!(
            d < 1.63 / m.sqrt(),
            "KS distance {d} (1% critical value {})",
            1.63 / m.sqrt()
        );
        assert!(z.iter().all(|v| v.is_finite() && v.abs() < 6.57));
    }

    #[test]
    fn normal_stream_is_reproducible() {
        let (mut a, mut b, mut c) = (
            NormalStream::new(1, 2),
            NormalStream::new(1, 2),
            NormalStream::new(1, 3),
        );
        let (mut x, mut y, mut w) = ([0.0f32; 37], [0.0f32; 37], [0.0f32; 37]);
        a.fill(&mut x);
        b.fill(&mut y);
        c.fill(&mut w);
        assert_eq!(x, y);
        assert_ne!(x, w);
    }

    /// erf by its Maclaurin series / continued fraction is overkill here: Abramowitz–Stegun 7.1.26
    /// has absolute error 1.5e-7, far below the KS tolerance used.
    fn erf(x: f64) -> f64 {
        let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
        let y = 1.0
            - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736)
                * t
                + 0.254_829_592)
                * t
                * (-x * x).exp();
        y.copysign(x)
    }
}
