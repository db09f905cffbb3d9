//! Adaptive Dormand–Prince 5(4) integration (Dormand & Prince 1980; the `dopri5` of Hairer,
//! Nørsett & Wanner, "Solving ODEs I", II.4–II.5) of a batch of independent systems that share
//! one right-hand side evaluation, e.g. a continuous normalising flow over many points.
//!
//! * State: `rows` systems of `width` f64 values, stored row-major; the right-hand side
//!   f(t, y) → dy/dt is called on the whole batch at once (one network pass per stage).
//! * Step: the 7-stage tableau with the first-same-as-last property (6 new evaluations per
//!   step), the 5th-order solution propagated, the embedded 4th-order one for the error.
//! * Error control: for each row, err = √(mean_k (e_k / (atol + rtol·max(|y_k|, |y'_k|)))²);
//!   a step is accepted when the **largest row error** is ≤ 1 (stricter than one norm over the
//!   whole batch, so every point meets the tolerance). New step h·min(10, max(0.2,
//!   0.9·err^−1/5)), no growth right after a rejection.
//! * Initial step: Hairer's heuristic (II.4, "starting step size") from ‖y₀‖ and ‖f(t₀, y₀)‖,
//!   never longer than the interval (its probe would otherwise leave it where f(t₀) ≈ 0).
//! * Integration runs from t0 to t1 in either direction; `nfe` counts right-hand-side calls.

use crate::error::{Error, Result};

/// A right-hand side f(t, y, dy/dt) over a whole batch.
pub type Rhs<'a> = dyn FnMut(f64, &[f64], &mut [f64]) -> Result<()> + 'a;
/// The counted right-hand side used inside a step.
type CountedRhs<'a> = dyn FnMut(f64, &[f64], &mut [f64], &mut OdeStats) -> Result<()> + 'a;

/// Integration settings.
#[derive(Clone, Copy, Debug)]
pub struct Dopri5 {
    pub atol: f64,
    pub rtol: f64,
    /// Give up after this many right-hand-side evaluations.
    pub max_nfe: usize,
}

impl Default for Dopri5 {
    fn default() -> Self {
        Self {
            atol: 1e-5,
            rtol: 1e-5,
            max_nfe: 100_000,
        }
    }
}

/// What an integration did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OdeStats {
    /// Right-hand-side evaluations (each over the whole batch).
    pub nfe: usize,
    pub accepted: usize,
    pub rejected: usize,
}

// Dormand–Prince coefficients
const C2: f64 = 1.0 / 5.0;
const C3: f64 = 3.0 / 10.0;
const C4: f64 = 4.0 / 5.0;
const C5: f64 = 8.0 / 9.0;
const A21: f64 = 1.0 / 5.0;
const A31: f64 = 3.0 / 40.0;
const A32: f64 = 9.0 / 40.0;
const A41: f64 = 44.0 / 45.0;
const A42: f64 = -56.0 / 15.0;
const A43: f64 = 32.0 / 9.0;
const A51: f64 = 19372.0 / 6561.0;
const A52: f64 = -25360.0 / 2187.0;
const A53: f64 = 64448.0 / 6561.0;
const A54: f64 = -212.0 / 729.0;
const A61: f64 = 9017.0 / 3168.0;
const A62: f64 = -355.0 / 33.0;
const A63: f64 = 46732.0 / 5247.0;
const A64: f64 = 49.0 / 176.0;
const A65: f64 = -5103.0 / 18656.0;
const A71: f64 = 35.0 / 384.0;
const A73: f64 = 500.0 / 1113.0;
const A74: f64 = 125.0 / 192.0;
const A75: f64 = -2187.0 / 6784.0;
const A76: f64 = 11.0 / 84.0;
// error coefficients: b (5th order) − b̂ (4th order)
const E1: f64 = 71.0 / 57600.0;
const E3: f64 = -71.0 / 16695.0;
const E4: f64 = 71.0 / 1920.0;
const E5: f64 = -17253.0 / 339200.0;
const E6: f64 = 22.0 / 525.0;
const E7: f64 = -1.0 / 40.0;

impl Dopri5 {
    /// Integrate `y` (rows × width, row-major) from `t0` to `t1` in place with the right-hand
    /// side `f(t, y, dy)`.
    pub fn integrate(
        &self,
        f: &mut Rhs<'_>,
        t0: f64,
        t1: f64,
        y: &mut [f64],
        width: usize,
    ) -> Result<OdeStats> {
        let n = y.len();
        if width == 0 || !n.is_multiple_of(width) {
            return Err(Error::Shape(format!(
                "ODE state of {n} values is not rows of {width}"
            )));
        }
        if !(self.atol > 0.0 && self.rtol >= 0.0) {
            return Err(Error::Config("ODE tolerances must be positive".into()));
        }
        let mut st = OdeStats::default();
        if t0 == t1 || n == 0 {
            return Ok(st);
        }
        let dir = (t1 - t0).signum();
        let mut k: Vec<Vec<f64>> = (0..7).map(|_| vec![0.0; n]).collect();
        let mut tmp = vec![0.0; n];
        let mut ynew = vec![0.0; n];
        let mut call = |t: f64, y: &[f64], dy: &mut [f64], st: &mut OdeStats| -> Result<()> {
            st.nfe += 1;
            if st.nfe > self.max_nfe {
                return Err(Error::Diverged(format!(
                    "ODE integration needed more than {} evaluations",
                    self.max_nfe
                )));
            }
            f(t, y, dy)?;
            if let Some(i) = dy.iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite(format!(
                    "the ODE right-hand side is not finite at t = {t} (entry {i})"
                )));
            }
            Ok(())
        };
        call(t0, y, &mut k[0], &mut st)?;
        let span = (t1 - t0).abs();
        let mut h = self.initial_step(&mut call, t0, y, &k[0], dir, span, width, &mut st)?;
        let mut t = t0;
        let mut last_rejected = false;
        while (t1 - t) * dir > 0.0 {
            if (t + h - t1) * dir > 0.0 {
                h = t1 - t;
            }
            let stage = |tmp: &mut [f64], y: &[f64], k: &[Vec<f64>], coef: &[(usize, f64)]| {
                for i in 0..n {
                    let mut s = 0.0;
                    for &(j, a) in coef {
                        s += a * k[j][i];
                    }
                    tmp[i] = y[i] + h * s;
                }
            };
            stage(&mut tmp, y, &k, &[(0, A21)]);
            call(t + C2 * h, &tmp, &mut k[1], &mut st)?;
            stage(&mut tmp, y, &k, &[(0, A31), (1, A32)]);
            call(t + C3 * h, &tmp, &mut k[2], &mut st)?;
            stage(&mut tmp, y, &k, &[(0, A41), (1, A42), (2, A43)]);
            call(t + C4 * h, &tmp, &mut k[3], &mut st)?;
            stage(&mut tmp, y, &k, &[(0, A51), (1, A52), (2, A53), (3, A54)]);
            call(t + C5 * h, &tmp, &mut k[4], &mut st)?;
            stage(
                &mut tmp,
                y,
                &k,
                &[(0, A61), (1, A62), (2, A63), (3, A64), (4, A65)],
            );
            call(t + h, &tmp, &mut k[5], &mut st)?;
            stage(
                &mut ynew,
                y,
                &k,
                &[(0, A71), (2, A73), (3, A74), (4, A75), (5, A76)],
            );
            call(t + h, &ynew, &mut k[6], &mut st)?;
            // error per row, the largest decides
            let mut err = 0.0f64;
            for (r, (y0, y1)) in y.chunks(width).zip(ynew.chunks(width)).enumerate() {
                let mut s = 0.0;
                for c in 0..width {
                    let i = r * width + c;
                    let e = h
                        * (E1 * k[0][i]
                            + E3 * k[2][i]
                            + E4 * k[3][i]
                            + E5 * k[4][i]
                            + E6 * k[5][i]
                            + E7 * k[6][i]);
                    let sc = self.atol + self.rtol * y0[c].abs().max(y1[c].abs());
                    s += (e / sc).powi(2);
                }
                err = err.max((s / width as f64).sqrt());
            }
            if !err.is_finite() {
                return Err(Error::NonFinite("ODE error estimate is not finite".into()));
            }
            if err <= 1.0 {
                t += h;
                y.copy_from_slice(&ynew);
                k.swap(0, 6); // first same as last
                st.accepted += 1;
                let grow = if err == 0.0 {
                    10.0
                } else {
                    (0.9 * err.powf(-0.2)).clamp(0.2, 10.0)
                };
                h *= if last_rejected { grow.min(1.0) } else { grow };
                last_rejected = false;
            } else {
                st.rejected += 1;
                h *= (0.9 * err.powf(-0.2)).clamp(0.2, 1.0);
                last_rejected = true;
            }
            if h.abs() < 1e-12 * (1.0 + t.abs()) {
                return Err(Error::Diverged(format!(
                    "ODE step size underflow at t = {t}"
                )));
            }
        }
        Ok(st)
    }

    /// Hairer's starting step: h₀ = 0.01·‖y₀‖/‖f₀‖ (or 1e−6), one Euler step to estimate the
    /// second derivative, h = min(100·h₀, (0.01/max(‖f₀‖, ‖f′‖))^{1/5}).
    #[allow(clippy::too_many_arguments)]
    fn initial_step(
        &self,
        call: &mut CountedRhs<'_>,
        t0: f64,
        y0: &[f64],
        f0: &[f64],
        dir: f64,
        span: f64,
        width: usize,
        st: &mut OdeStats,
    ) -> Result<f64> {
        let n = y0.len();
        let sc: Vec<f64> = y0.iter().map(|v| self.atol + self.rtol * v.abs()).collect();
        let norm = |v: &[f64]| -> f64 {
            // largest row RMS, as the error control
            v.chunks(width)
                .zip(sc.chunks(width))
                .map(|(r, s)| {
                    (r.iter().zip(s).map(|(a, b)| (a / b).powi(2)).sum::<f64>() / width as f64)
                        .sqrt()
                })
                .fold(0.0, f64::max)
        };
        let (d0, d1) = (norm(y0), norm(f0));
        let h0 = if d0 < 1e-5 || d1 < 1e-5 {
            1e-6
        } else {
            0.01 * d0 / d1
        }
        // never probe outside the interval (a near-zero f at t0 makes d0/d1 huge)
        .min(span);
        let y1: Vec<f64> = (0..n).map(|i| y0[i] + dir * h0 * f0[i]).collect();
        let mut f1 = vec![0.0; n];
        call(t0 + dir * h0, &y1, &mut f1, st)?;
        let diff: Vec<f64> = (0..n).map(|i| f1[i] - f0[i]).collect();
        let d2 = norm(&diff) / h0;
        let h1 = if d1.max(d2) <= 1e-15 {
            (1e-6f64).max(h0 * 1e-3)
        } else {
            (0.01 / d1.max(d2)).powf(0.2)
        };
        Ok(dir * (100.0 * h0).min(h1).min(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A right-hand side that is nearly zero at t0 makes Hairer's ‖y‖/‖f‖ huge: the starting
    /// step must still stay inside the interval (it used to probe far beyond it).
    #[test]
    fn the_starting_step_never_leaves_the_interval() {
        for (t0, t1) in [(0.0, 1.0), (1.0, 0.0)] {
            let mut worst = 0.0f64;
            let mut f = |t: f64, y: &[f64], dy: &mut [f64]| -> Result<()> {
                worst = worst.max((t - t0) / (t1 - t0));
                dy[0] = 1e-3 * y[0];
                Ok(())
            };
            let mut y = vec![1.0];
            Dopri5::default()
                .integrate(&mut f, t0, t1, &mut y, 1)
                .unwrap();
            assert!(
                worst <= 1.0 + 1e-12,
                "probed at fraction {worst} of the interval"
            );
            let want = if t1 > t0 {
                1e-3f64.exp()
            } else {
                (-1e-3f64).exp()
            };
            assert!((y[0] - want).abs() < 1e-8, "{} vs {want}", y[0]);
        }
    }

    /// y′ = A·y for a rotation-plus-decay generator: the exact solution is known; the error is
    /// of the order of the tolerance, and a tighter tolerance costs more evaluations.
    #[test]
    fn linear_and_rotating_fields_match_their_exact_solutions() {
        let (a, w) = (-0.3, 2.0);
        // rows: several starting points of the same 2-D system
        let starts = [[1.0, 0.0], [0.0, 2.0], [-3.0, 1.5], [0.2, -0.1]];
        let mut prev_nfe = 0;
        for tol in [1e-4, 1e-6, 1e-8] {
            let ode = Dopri5 {
                atol: tol,
                rtol: tol,
                ..Dopri5::default()
            };
            let mut y: Vec<f64> = starts.iter().flatten().copied().collect();
            let mut f = |_t: f64, y: &[f64], dy: &mut [f64]| -> Result<()> {
                for (r, d) in y.chunks(2).zip(dy.chunks_mut(2)) {
                    d[0] = a * r[0] - w * r[1];
                    d[1] = w * r[0] + a * r[1];
                }
                Ok(())
            };
            let t1 = 3.0;
            let st = ode.integrate(&mut f, 0.0, t1, &mut y, 2).unwrap();
            let mut worst = 0.0f64;
            for (s, r) in starts.iter().zip(y.chunks(2)) {
                let (c, sn) = ((w * t1).cos(), (w * t1).sin());
                let e = (a * t1).exp();
                let want = [e * (c * s[0] - sn * s[1]), e * (sn * s[0] + c * s[1])];
                worst = worst
                    .max((r[0] - want[0]).abs())
                    .max((r[1] - want[1]).abs());
            }
            assert!(worst < 50.0 * tol, "tol {tol}: error {worst}");
            assert!(
                st.nfe > prev_nfe,
                "tighter tolerance must cost more ({st:?})"
            );
            prev_nfe = st.nfe;
            // and back again: the flow is invertible
            ode.integrate(&mut f, t1, 0.0, &mut y, 2).unwrap();
            let back = starts
                .iter()
                .flatten()
                .zip(&y)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(back < 100.0 * tol, "tol {tol}: round trip error {back}");
        }
    }

    /// A scalar field with a time-dependent rate: y′ = cos(t)·y, y(t) = y₀·e^{sin t}.
    #[test]
    fn time_dependent_field() {
        let ode = Dopri5::default();
        let mut y = vec![1.0, -2.0];
        let mut f = |t: f64, y: &[f64], dy: &mut [f64]| -> Result<()> {
            for (d, v) in dy.iter_mut().zip(y) {
                *d = t.cos() * v;
            }
            Ok(())
        };
        ode.integrate(&mut f, 0.0, 5.0, &mut y, 1).unwrap();
        let e = 5f64.sin().exp();
        assert!(
            (y[0] - e).abs() < 1e-4 && (y[1] + 2.0 * e).abs() < 2e-4,
            "{y:?}"
        );
        let mut bad = |_t: f64, _y: &[f64], dy: &mut [f64]| -> Result<()> {
            dy.fill(f64::NAN);
            Ok(())
        };
        assert!(ode.integrate(&mut bad, 0.0, 1.0, &mut y, 1).is_err());
    }
}
