//! Where a trained model's score is wrong, and whether its training targets would correct it:
//! for rows of a reference file noised to σ(t) (mean-free for particle systems), the run's network
//! score s_θ, a high-K DEM estimate T of the true noised score (the "truth"), and the mean over
//! repeats of the training targets at the run's K — with the run's proposal (model-guided if the run
//! used it) and with the plain one. Per noise level it prints the network's error |s_θ − T|²/dim, the
//! targets' bias |Ḡ − T|²/dim, and the *pull* of each target towards the network,
//! Σ(Ḡ − T)·(s_θ − T) / Σ|s_θ − T|²: 0 for an unbiased target, 1 for a target that merely repeats the
//! network's own error (then training has nothing left to correct). `net∥T` is the network's
//! score projected on the truth, Σ s_θ·T / Σ|T|² (below 1: too weak a score, hot samples).
//!
//!     cargo run --release --example score_error_profile -- RUN REFERENCE.npy [ROWS [K_TRUTH [REPEATS]]]
//!
//! The truth is computed twice (plain and guided proposals, K_TRUTH each, default 100 000); their
//! disagreement is printed as a check of the truth itself. No clipping anywhere. Used for the
//! hot-seed diagnosis in docs/results-particles.md.

use std::path::Path;

use candle_core::Device;
use idem::energy::particles::remove_mean;
use idem::model::ScoreModel;
use idem::rng::NormalStream;
use idem::DemTarget;

fn dot(a: &[f32], b: &[f32], c: &[f32], d: &[f32]) -> f64 {
    // Σ (a − b)·(c − d)
    a.iter()
        .zip(b)
        .zip(c.iter().zip(d))
        .map(|((a, b), (c, d))| f64::from(a - b) * f64::from(c - d))
        .sum()
}

fn main() -> idem::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: score_error_profile RUN REFERENCE.npy [ROWS [K_TRUTH [REPEATS]]]");
        std::process::exit(2);
    }
    let num = |i: usize, d: usize| {
        args.get(i)
            .map_or(Ok(d), |s| s.parse::<usize>())
            .unwrap_or_else(|_| {
                eprintln!("ROWS, K_TRUTH and REPEATS must be whole numbers");
                std::process::exit(2)
            })
    };
    let (rows, k_truth, repeats) = (num(3, 256), num(4, 100_000), num(5, 8));
    let model = ScoreModel::load(Path::new(&args[1]), "checkpoint.safetensors", &Device::Cpu)?;
    let cfg = model.cfg.clone();
    let target = model.target.clone();
    let shape = target.particles();
    let dim = target.dim();
    let batch = idem::io::npy::read_batch(Path::new(&args[2]), dim, shape)?;
    let n = batch.n.min(rows);
    // the estimators below work in target coordinates, the network in coordinates divided by
    // `data_scale`: only data_scale = 1 is supported here
    if cfg.data_scale != 1.0 {
        eprintln!("score_error_profile: only runs with data_scale = 1 are supported");
        std::process::exit(2);
    }
    let mut x0: Vec<f32> = batch.data[..n * dim].to_vec();
    if let Some(p) = shape {
        remove_mean(&mut x0, p);
    }
    let sched = cfg.schedule;
    let blend = (cfg.dem_blend_sigma > 0.0).then_some(cfg.dem_blend_sigma);
    let truth = DemTarget::new(sched, k_truth, None)?.with_blend(blend)?;
    let train = DemTarget::new(sched, cfg.num_mc_samples, None)?.with_blend(blend)?;
    println!(
        "{n} rows of {}, run {} (K = {}, guided = {}, σ_b = {:?}); truth K = {k_truth}, {repeats} repeats",
        args[2], args[1], cfg.num_mc_samples, cfg.dem_guided, blend
    );
    println!(
        "   t     σ(t) |  |T|²/d  net err  net∥T | guided: bias   pull   ESS | plain: bias   pull  shrink  ESS | truth Δ²/d"
    );
    for ti in 0..=20u64 {
        let t = ti as f32 / 20.0;
        let sd = sched.sigma(f64::from(t)) as f32;
        let mut eps = vec![0f32; n * dim];
        NormalStream::new(91 + ti, 0).fill(&mut eps);
        if let Some(p) = shape {
            remove_mean(&mut eps, p);
        }
        let xt: Vec<f32> = x0.iter().zip(&eps).map(|(a, e)| a + sd * e).collect();
        let tv = vec![t; n];
        let s = model.score(&xt, t)?;
        let mut tp = vec![0f32; n * dim];
        let mut tg = vec![0f32; n * dim];
        truth.estimate(&target, &xt, &tv, 1000 + ti, &mut tp)?;
        truth.estimate_guided(&target, &xt, &tv, &s, 2000 + ti, &mut tg)?;
        let tt: Vec<f32> = tp.iter().zip(&tg).map(|(a, b)| 0.5 * (a + b)).collect();
        let mut gm = vec![0f64; n * dim];
        let mut pm = vec![0f64; n * dim];
        let (mut ess_g, mut ess_p) = (0.0, 0.0);
        let mut out = vec![0f32; n * dim];
        for r in 0..repeats as u64 {
            let st =
                train.estimate_guided(&target, &xt, &tv, &s, 10_000 + 100 * ti + r, &mut out)?;
            ess_g += st.mean_ess / repeats as f64;
            gm.iter_mut()
                .zip(&out)
                .for_each(|(m, v)| *m += f64::from(*v));
            let st = train.estimate(&target, &xt, &tv, 20_000 + 100 * ti + r, &mut out)?;
            ess_p += st.mean_ess / repeats as f64;
            pm.iter_mut()
                .zip(&out)
                .for_each(|(m, v)| *m += f64::from(*v));
        }
        let gm: Vec<f32> = gm.iter().map(|v| (v / repeats as f64) as f32).collect();
        let pm: Vec<f32> = pm.iter().map(|v| (v / repeats as f64) as f32).collect();
        let zero = vec![0f32; n * dim];
        let nd = (n * dim) as f64;
        let net_err = dot(&s, &tt, &s, &tt);
        println!(
            "{t:5.2} {sd:8.4} | {:8.2} {:7.3} {:6.3} | {:7.3} {:6.3} {:6.1} | {:7.3} {:6.3} {:6.3} {:6.1} | {:7.4}",
            dot(&tt, &zero, &tt, &zero) / nd,
            net_err / nd,
            dot(&s, &zero, &tt, &zero) / dot(&tt, &zero, &tt, &zero),
            dot(&gm, &tt, &gm, &tt) / nd,
            dot(&gm, &tt, &s, &tt) / net_err,
            ess_g,
            dot(&pm, &tt, &pm, &tt) / nd,
            dot(&pm, &tt, &s, &tt) / net_err,
            dot(&pm, &tt, &zero, &tt) / dot(&tt, &zero, &tt, &zero),
            ess_p,
            dot(&tp, &tg, &tp, &tg) / nd,
        );
    }
    saturation(&model, &x0, shape.map_or(dim, |p| p.spatial_dim))?;
    Ok(())
}

/// The network's per-particle (per-point for other targets) score norm at t = 0 against the
/// true |∇log p| of the reference rows, binned by the latter: a network whose output is bounded
/// (the EGNN's tanh-bounded coordinate updates) shows a ceiling on |s_θ| that the forces pass.
fn saturation(model: &ScoreModel, x0: &[f32], group: usize) -> idem::Result<()> {
    let target = &model.target;
    let dim = target.dim();
    let n = x0.len() / dim;
    let x64: Vec<f64> = x0.iter().map(|v| f64::from(*v)).collect();
    let mut lp = vec![0f64; n];
    let mut g = vec![0f64; n * dim];
    target.log_prob_grad_batch_f64(&x64, &mut lp, &mut g)?;
    let mut g32: Vec<f32> = g.iter().map(|v| *v as f32).collect();
    if let Some(p) = target.particles() {
        remove_mean(&mut g32, p);
    }
    let s = model.score(x0, 0.0)?;
    let norm = |v: &[f32]| v.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
    let pairs: Vec<(f64, f64)> = g32
        .chunks(group)
        .zip(s.chunks(group))
        .map(|(a, b)| (norm(a), norm(b)))
        .collect();
    println!("t = 0: per-particle |s_θ| against the true |∇log p| (binned)");
    println!("  |∇log p| bin      n   mean |∇log p|  mean |s_θ|  max |s_θ|");
    let mut lo = 0.0;
    while lo < 60.0 {
        let hi = if lo < 20.0 { lo + 2.0 } else { lo + 10.0 };
        let bin: Vec<&(f64, f64)> = pairs.iter().filter(|(a, _)| *a >= lo && *a < hi).collect();
        if !bin.is_empty() {
            let m = bin.len() as f64;
            println!(
                "  [{lo:4.0}, {hi:4.0}) {:6} {:12.2} {:11.2} {:10.2}",
                bin.len(),
                bin.iter().map(|p| p.0).sum::<f64>() / m,
                bin.iter().map(|p| p.1).sum::<f64>() / m,
                bin.iter().map(|p| p.1).fold(0.0, f64::max)
            );
        }
        lo = hi;
    }
    Ok(())
}
