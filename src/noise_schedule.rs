//! Noise schedules of the variance-exploding SDE dx = g(t) dW, t ∈ [0, 1].
//!
//! `h(t)` is the variance added by time t (x_t = x_0 + √h(t)·ε) and `g(t)² = h'(t)`:
//!
//! | schedule  | h(t)                                   | g(t)²                                    |
//! |-----------|----------------------------------------|------------------------------------------|
//! | geometric | σ_min²((σ_max/σ_min)^{2t} − 1)         | 2·ln(σ_max/σ_min)·σ_min²(σ_max/σ_min)^{2t} |
//! | linear    | β·t                                    | β                                        |
//! | quadratic | β·t²                                   | 2β·t                                     |
//!
//! The geometric schedule is the reference's (σ_min, σ_max = 1e-5, 1 for GMM-40; 1e-5, 3 for DW-4;
//! 0.01, 2 for LJ-13); it is evaluated with `expm1` so h stays accurate near t = 0.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A VE noise schedule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NoiseSchedule {
    /// h(t) = σ_min²((σ_max/σ_min)^{2t} − 1).
    Geometric { sigma_min: f64, sigma_max: f64 },
    /// h(t) = β·t.
    Linear { beta: f64 },
    /// h(t) = β·t².
    Quadratic { beta: f64 },
}

impl NoiseSchedule {
    /// A geometric schedule, checked: 0 < σ_min < σ_max.
    pub fn geometric(sigma_min: f64, sigma_max: f64) -> Result<Self> {
        Self::Geometric {
            sigma_min,
            sigma_max,
        }
        .validated()
    }
    /// A linear schedule, checked: β > 0.
    pub fn linear(beta: f64) -> Result<Self> {
        Self::Linear { beta }.validated()
    }
    /// A quadratic schedule, checked: β > 0.
    pub fn quadratic(beta: f64) -> Result<Self> {
        Self::Quadratic { beta }.validated()
    }

    /// Check the parameters (useful after deserialising).
    pub fn validated(self) -> Result<Self> {
        let ok = match self {
            Self::Geometric {
                sigma_min,
                sigma_max,
            } => sigma_min > 0.0 && sigma_max > sigma_min && sigma_max.is_finite(),
            Self::Linear { beta } | Self::Quadratic { beta } => beta > 0.0 && beta.is_finite(),
        };
        if ok {
            Ok(self)
        } else {
            Err(Error::Config(format!(
                "invalid noise schedule {self:?}: need 0 < sigma_min < sigma_max, beta > 0"
            )))
        }
    }

    /// Variance added by time t: h(t).
    #[inline]
    pub fn h(&self, t: f64) -> f64 {
        match *self {
            Self::Geometric {
                sigma_min,
                sigma_max,
            } => {
                let log_ratio = (sigma_max / sigma_min).ln();
                sigma_min * sigma_min * (2.0 * t * log_ratio).exp_m1()
            }
            Self::Linear { beta } => beta * t,
            Self::Quadratic { beta } => beta * t * t,
        }
    }

    /// Squared diffusion coefficient g(t)² = h'(t).
    #[inline]
    pub fn g2(&self, t: f64) -> f64 {
        match *self {
            Self::Geometric {
                sigma_min,
                sigma_max,
            } => {
                let log_ratio = (sigma_max / sigma_min).ln();
                2.0 * log_ratio * sigma_min * sigma_min * (2.0 * t * log_ratio).exp()
            }
            Self::Linear { beta } => beta,
            Self::Quadratic { beta } => 2.0 * beta * t,
        }
    }

    /// Diffusion coefficient g(t).
    #[inline]
    pub fn g(&self, t: f64) -> f64 {
        self.g2(t).sqrt()
    }

    /// Standard deviation of the noise added by time t: √h(t).
    #[inline]
    pub fn sigma(&self, t: f64) -> f64 {
        self.h(t).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<NoiseSchedule> {
        vec![
            NoiseSchedule::geometric(1e-5, 1.0).unwrap(),
            NoiseSchedule::geometric(1e-5, 3.0).unwrap(),
            NoiseSchedule::geometric(0.01, 2.0).unwrap(),
            NoiseSchedule::linear(2.5).unwrap(),
            NoiseSchedule::quadratic(4.0).unwrap(),
        ]
    }

    #[test]
    fn closed_forms() {
        let s = NoiseSchedule::geometric(0.01, 2.0).unwrap();
        for t in [0.0, 0.1, 0.5, 1.0] {
            let direct = 0.01f64.powi(2) * ((2.0f64 / 0.01).powf(2.0 * t) - 1.0);
            assert!((s.h(t) - direct).abs() <= 1e-12 * direct.max(1e-300));
            // the reference writes g(t) = σ_min·(σ_max/σ_min)^t·√(2 ln(σ_max/σ_min))
            let g_ref = 0.01 * (200.0f64).powf(t) * (2.0 * 200.0f64.ln()).sqrt();
            assert!((s.g(t) - g_ref).abs() <= 1e-12 * g_ref);
        }
        assert_eq!(s.h(0.0), 0.0);
        assert!(
            (s.h(1.0) - (4.0 - 1e-4)).abs() < 1e-12,
            "h(1) = σ_max² − σ_min²"
        );
        let l = NoiseSchedule::linear(2.5).unwrap();
        assert_eq!((l.h(0.4), l.g2(0.4)), (1.0, 2.5));
        let q = NoiseSchedule::quadratic(4.0).unwrap();
        assert!((q.h(0.5) - 1.0).abs() < 1e-15 && (q.g2(0.5) - 4.0).abs() < 1e-15);
    }

    #[test]
    fn g2_is_the_derivative_of_h() {
        for s in all() {
            for i in 1..20 {
                let t = i as f64 / 20.0;
                let eps = 1e-6;
                let fd = (s.h(t + eps) - s.h(t - eps)) / (2.0 * eps);
                assert!(
                    (fd - s.g2(t)).abs() <= 1e-6 * s.g2(t).max(1e-12),
                    "{s:?} t={t}: {fd} vs {}",
                    s.g2(t)
                );
            }
        }
    }

    #[test]
    fn h_is_increasing_and_integrates_g2() {
        for s in all() {
            // trapezoid rule on g² reproduces h(1)
            let n = 20_000;
            let integral: f64 = (0..n)
                .map(|i| {
                    let (a, b) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                    0.5 * (s.g2(a) + s.g2(b)) / n as f64
                })
                .sum();
            assert!((integral - s.h(1.0)).abs() <= 1e-6 * s.h(1.0), "{s:?}");
            let mut prev = -1.0;
            for i in 0..=100 {
                let h = s.h(i as f64 / 100.0);
                assert!(h > prev);
                prev = h;
            }
        }
    }

    #[test]
    fn rejects_bad_parameters_and_round_trips_serde() {
        assert!(NoiseSchedule::geometric(0.0, 1.0).is_err());
        assert!(NoiseSchedule::geometric(2.0, 1.0).is_err());
        assert!(NoiseSchedule::linear(-1.0).is_err());
        assert!(NoiseSchedule::quadratic(f64::NAN).is_err());
        let s = NoiseSchedule::geometric(1e-5, 3.0).unwrap();
        let txt = serde_json::to_string(&s).unwrap();
        assert_eq!(
            txt,
            r#"{"kind":"geometric","sigma_min":0.00001,"sigma_max":3.0}"#
        );
        assert_eq!(serde_json::from_str::<NoiseSchedule>(&txt).unwrap(), s);
    }
}
