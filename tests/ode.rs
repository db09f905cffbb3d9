//! Our batch DOPRI5 against an independent implementation (the `ode_solvers` crate's 8th-order
//! DOP853 at a tight tolerance) on a nonlinear system without a closed-form solution. (The
//! crate's own DOPRI5 reports its end point through dense output, which is off by ~4e-5 here
//! at any tolerance; DOP853 converges to the same value as ours.)

use idem::cnf::ode::Dopri5;
use ode_solvers::{System, Vector2};

/// Van der Pol oscillator, μ = 1.
struct VanDerPol;

impl System<f64, Vector2<f64>> for VanDerPol {
    fn system(&self, _t: f64, y: &Vector2<f64>, dy: &mut Vector2<f64>) {
        dy[0] = y[1];
        dy[1] = (1.0 - y[0] * y[0]) * y[1] - y[0];
    }
}

fn vdp_batch(t: f64, y: &[f64], dy: &mut [f64]) -> idem::Result<()> {
    let _ = t;
    for (a, b) in y.chunks_exact(2).zip(dy.chunks_exact_mut(2)) {
        b[0] = a[1];
        b[1] = (1.0 - a[0] * a[0]) * a[1] - a[0];
    }
    Ok(())
}

fn independent(y0: [f64; 2], t1: f64, tol: f64) -> [f64; 2] {
    let mut s = ode_solvers::Dop853::new(
        VanDerPol,
        0.0,
        t1,
        0.1,
        Vector2::new(y0[0], y0[1]),
        tol,
        tol,
    );
    s.integrate().expect("ode_solvers integrates Van der Pol");
    let (t, y) = (s.x_out().last().unwrap(), s.y_out().last().unwrap());
    assert!((t - t1).abs() < 1e-12, "ode_solvers stopped at {t}");
    [y[0], y[1]]
}

const STARTS: [[f64; 2]; 4] = [[2.0, 0.0], [0.5, -1.0], [-1.5, 2.0], [0.1, 0.1]];

#[test]
fn matches_ode_solvers_at_tight_tolerance() {
    let mut y: Vec<f64> = STARTS.iter().flatten().copied().collect();
    let solver = Dopri5 {
        atol: 1e-11,
        rtol: 1e-11,
        max_nfe: 1_000_000,
    };
    solver
        .integrate(&mut vdp_batch, 0.0, 6.0, &mut y, 2)
        .unwrap();
    for (i, s) in STARTS.iter().enumerate() {
        let r = independent(*s, 6.0, 1e-12);
        for k in 0..2 {
            assert!(
                (y[2 * i + k] - r[k]).abs() < 1e-6,
                "start {s:?}: ours {} vs ode_solvers {}",
                y[2 * i + k],
                r[k]
            );
        }
    }
}

#[test]
fn default_tolerance_error_is_of_the_order_of_the_tolerance() {
    let mut y: Vec<f64> = STARTS.iter().flatten().copied().collect();
    let stats = Dopri5::default()
        .integrate(&mut vdp_batch, 0.0, 6.0, &mut y, 2)
        .unwrap();
    let mut worst = 0.0f64;
    for (i, s) in STARTS.iter().enumerate() {
        let r = independent(*s, 6.0, 1e-12);
        for k in 0..2 {
            worst = worst.max((y[2 * i + k] - r[k]).abs());
        }
    }
    // local tolerance 1e-5 per step; the global error over a few periods stays within ~100×
    assert!(worst < 1e-3, "global error {worst} at tolerance 1e-5");
    assert!(worst > 1e-12, "suspiciously exact: {worst}");
    assert!(stats.nfe < 2000, "{stats:?}");
}

#[test]
fn backward_integration_returns_to_the_start() {
    let start: Vec<f64> = STARTS.iter().flatten().copied().collect();
    let mut y = start.clone();
    let solver = Dopri5 {
        atol: 1e-10,
        rtol: 1e-10,
        max_nfe: 1_000_000,
    };
    solver
        .integrate(&mut vdp_batch, 0.0, 3.0, &mut y, 2)
        .unwrap();
    solver
        .integrate(&mut vdp_batch, 3.0, 0.0, &mut y, 2)
        .unwrap();
    for (a, b) in y.iter().zip(&start) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
}
