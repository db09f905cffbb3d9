//! How the DEM target behaves across noise levels on equilibrium configurations: per-particle
//! norm of the (unclipped) estimate, the fraction above given clips, its delta-method standard
//! error and the weights' effective sample size, for noised rows of a reference file.
//!
//!     cargo run --release --example dem_noise_profile -- lj13 ../shared/data/benchmarks/lj13_val.npy
//!
//! Optional third and fourth arguments: σ_min and σ_max of the geometric schedule (default the
//! LJ-13 presets' 0.01 and 2), fifth: K (default 1000). Used for the README's "clipping by noise
//! level" table.

use std::path::Path;

use idem::energy::particles::remove_mean;
use idem::rng::NormalStream;
use idem::{DemTarget, NoiseSchedule, Target};

fn quantile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn norms(v: &[f32], group: usize) -> Vec<f64> {
    v.chunks(group)
        .map(|c| c.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt())
        .filter(|n| n.is_finite())
        .collect()
}

fn main() -> idem::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: dem_noise_profile TARGET REFERENCE.npy [SIGMA_MIN SIGMA_MAX [K]]");
        std::process::exit(2);
    }
    let arg = |i: usize, d: f64| args.get(i).map_or(Ok(d), |s| s.parse::<f64>());
    let (smin, smax, k) = match (arg(3, 0.01), arg(4, 2.0), arg(5, 1000.0)) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c as usize),
        _ => {
            eprintln!("σ_min, σ_max and K must be numbers");
            std::process::exit(2);
        }
    };
    let target = Target::by_name(&args[1])?;
    let shape = target.particles();
    let dim = target.dim();
    let group = shape.map_or(dim, |p| p.spatial_dim);
    let batch = idem::io::npy::read_batch(Path::new(&args[2]), dim, shape)?;
    let n = batch.n.min(200);
    let mut x0 = batch.data[..n * dim].to_vec();
    if let Some(p) = shape {
        remove_mean(&mut x0, p);
    }
    let sched = NoiseSchedule::geometric(smin, smax)?;
    let dem = DemTarget::new(sched, k, None)?;
    println!(
        "{n} rows of {}, K = {k}; per-particle norms of the unclipped DEM target",
        args[2]
    );
    println!("   t      σ(t) | norm median   p90     max | >20    >80  | s.e. median  p90 | ESS");
    for ti in 0..=20u64 {
        let t = ti as f32 / 20.0;
        let sd = sched.sigma(f64::from(t)) as f32;
        let mut eps = vec![0f32; n * dim];
        NormalStream::new(77 + ti, 0).fill(&mut eps);
        if let Some(p) = shape {
            remove_mean(&mut eps, p);
        }
        let xt: Vec<f32> = x0.iter().zip(&eps).map(|(a, e)| a + sd * e).collect();
        let mut out = vec![0f32; n * dim];
        let mut se = vec![0f32; n * dim];
        let st = dem.estimate_with_stderr(&target, &xt, &vec![t; n], 5, &mut out, &mut se)?;
        let mut nv = norms(&out, group);
        let mut sv = norms(&se, group);
        let above = |c: f64| nv.iter().filter(|v| **v > c).count() as f64 / nv.len() as f64;
        let (a20, a80) = (above(20.0), above(80.0));
        println!(
            "{t:5.2} {sd:9.4} | {:8.1} {:7.1} {:7.1} | {a20:.3} {a80:.3} | {:8.2} {:6.2} | {:6.1}",
            quantile(&mut nv, 0.5),
            quantile(&mut nv, 0.9),
            quantile(&mut nv, 1.0),
            quantile(&mut sv, 0.5),
            quantile(&mut sv, 0.9),
            st.mean_ess
        );
    }
    Ok(())
}
