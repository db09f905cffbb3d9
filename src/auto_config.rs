//! Training settings for a target nobody has tuned: a user's energy trained without a preset.
//!
//! The settings that depend on the target — its length scale (the network's coordinates and the
//! noise schedule's σ_max), the width of its wells (the blended DEM target's σ_b) and the size of
//! its forces (the clipping norms) — are read off the target by a short **probe**: tempered MALA
//! ([`crate::mcmc`]: 128 chains × 8 temperatures up to T = 50, 50 relaxation steps, 300 warm-up
//! and 300 sampling steps, about 0.8 M energy calls, seconds for a 2-D numpy energy) started
//! from N(0, s²I) with s = the `scale` hint (1 if none). From the T = 1 draws:
//!
//! * **extent** R: the 99.9 % quantile over draws of max_d |x_d| (particle systems: of the
//!   mean-free coordinates), or the `scale` hint where given. The noise must reach every mode
//!   from the prior N(0, σ_max²I), so σ_max = R in target units. Vector targets train in network
//!   coordinates x / s with s = `data_scale` = 1.1·R and σ_max = 1 (the reference's GMM-40
//!   convention: means in ±40, s = 50); particle targets keep s = 1 (the EGNN sees distances in
//!   the target's units, as in the reference's DW-4 / LJ settings) and σ_max = R.
//! * **σ_b** = (E|∇log p|² / dim)^{−1/2}, the standard deviation of the Gaussian with the same
//!   mean squared score: the blend scale that makes the DEM target's variance vanish for a
//!   Gaussian well (`dem_target` docs; for GMM-40 this rule gives its mode width 1.31).
//! * **clip** = 2 × the RMS norm of ∇log p per clipping group (a particle, or the whole vector)
//!   in network coordinates, for the DEM target and for the sampler.
//!
//! The rest comes from the preset of the target's kind: `gmm-idem` (MLP 3 × 128, λ(t) = h + 10⁻³)
//! with B = 256, K = 400 and 100 SDE steps per epoch for plain vectors, `dw4-fast` (EGNN 3 × 64, B = 256, λ = 1;
//! with its settings of before 2026-12-05: K = 1000, 1000 buffer samples per epoch, no refinement)
//! for particle systems, both with the model-guided proposal, and a budget of
//! [`AUTO_EPOCHS`] epochs with an EMA of decay [`AUTO_EMA_DECAY`]. Every choice is recorded in the run's `config.toml`; the probe's
//! figures in `probe.json`. Any setting can still be overridden.

use serde::Serialize;

use crate::config::{Mode, TrainConfig};
use crate::energy::particles::remove_mean;
use crate::energy::Target;
use crate::error::{Error, Result};
use crate::mcmc::{self, Init, Kernel, McmcConfig};
use crate::net::NetConfig;
use crate::noise_schedule::NoiseSchedule;

/// Epochs of an automatically configured run (100 steps each). On Müller–Brown 60 and 120 epochs
/// gave the same basin weights (docs/muller-brown.md).
pub const AUTO_EPOCHS: usize = 60;
/// EMA decay of an automatically configured run: 0.99 averages the last ~100 steps; the presets'
/// 0.999 lags ~1000 steps, a sixth of a 60-epoch run (its EMA samples were further off than the
/// raw weights', docs/muller-brown.md).
pub const AUTO_EMA_DECAY: f64 = 0.99;

/// What the probe measured (module docs), in the target's units.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    /// T = 1 draws the figures come from.
    pub draws: usize,
    /// Energy evaluations the probe spent.
    pub energy_calls: u64,
    /// Mean of the draws per coordinate.
    pub mean: Vec<f64>,
    /// Standard deviation of the draws per coordinate.
    pub std: Vec<f64>,
    /// 99.9 % quantile of max_d |x_d| over the draws (module docs).
    pub extent: f64,
    /// The `scale` hint, if one was given (it then sets the extent used).
    pub scale_hint: Option<f64>,
    /// (E|∇log p|² / dim)^{−1/2}.
    pub sigma_b: f64,
    /// RMS norm of ∇log p per clipping group (particle or whole vector).
    pub group_grad_rms: f64,
    /// Mean acceptance of the T = 1 chains.
    pub accept: f64,
}

/// Run the probe of the module docs. `scale`: the target's length scale if known (where its
/// mass lies relative to the origin); `seed`: the probe's random stream.
pub fn probe(target: &Target, scale: Option<f64>, seed: u64) -> Result<Probe> {
    if let Some(s) = scale {
        if !(s.is_finite() && s > 0.0) {
            return Err(Error::Config(format!(
                "the scale hint must be positive and finite, got {s}"
            )));
        }
    }
    let dim = target.dim();
    let start = scale.unwrap_or(1.0);
    let cfg = McmcConfig {
        kernel: Kernel::Mala,
        chains: 128,
        warmup: 300,
        steps: 300,
        thin: 3,
        temperatures: 8,
        t_max: 50.0,
        init: Init::Prior { std: start },
        init_step: 1e-2 * start,
        relax_steps: 50,
        seed: crate::rng::mix64(seed ^ 0x9_0BE),
        trace_chains: 0,
        ..McmcConfig::default()
    };
    let probe_target = target.clone();
    let run = mcmc::run(&probe_target, &cfg, |_, _, _| {})?;
    let mut x: Vec<f64> = run.samples.clone();
    let n = x.len() / dim;
    if n == 0 {
        return Err(Error::Config(
            "the probe produced no draws (check the energy)".into(),
        ));
    }
    let mut lp = vec![0.0; n];
    let mut g = vec![0.0; x.len()];
    probe_target.log_prob_grad_batch_f64(&x, &mut lp, &mut g)?;
    let valid = lp.iter().filter(|l| l.is_finite()).count();
    if valid < n / 2 {
        return Err(Error::NonFinite(format!(
            "{} of the probe's {n} draws have an invalid log p: is the energy finite where its mass is?",
            n - valid
        )));
    }
    let mean: Vec<f64> = (0..dim)
        .map(|d| x.iter().skip(d).step_by(dim).sum::<f64>() / n as f64)
        .collect();
    let std: Vec<f64> = (0..dim)
        .map(|d| {
            let m = mean[d];
            (x.iter()
                .skip(d)
                .step_by(dim)
                .map(|v| (v - m) * (v - m))
                .sum::<f64>()
                / n as f64)
                .sqrt()
        })
        .collect();
    if let Some(p) = target.particles() {
        let mut xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        remove_mean(&mut xf, p);
        x = xf.into_iter().map(f64::from).collect();
    }
    let mut maxes: Vec<f64> = x
        .chunks(dim)
        .map(|r| r.iter().fold(0.0f64, |m, v| m.max(v.abs())))
        .collect();
    maxes.sort_by(f64::total_cmp);
    let extent = maxes[((n as f64 * 0.999) as usize).min(n - 1)];
    let (mut sq, mut cnt) = (0.0f64, 0usize);
    let group = target.particles().map_or(dim, |p| p.spatial_dim);
    let mut group_sq = 0.0f64;
    for (row, l) in g.chunks(dim).zip(&lp) {
        if l.is_finite() {
            sq += row.iter().map(|v| v * v).sum::<f64>();
            cnt += 1;
        }
    }
    if cnt > 0 {
        group_sq = sq / (cnt * (dim / group)) as f64;
        sq /= (cnt * dim) as f64;
    }
    if !(sq > 0.0 && sq.is_finite() && extent > 0.0 && extent.is_finite()) {
        return Err(Error::NonFinite(format!(
            "the probe could not measure the target (mean squared score {sq}, extent {extent})"
        )));
    }
    Ok(Probe {
        draws: n,
        energy_calls: probe_target.calls(),
        mean,
        std,
        extent,
        scale_hint: scale,
        sigma_b: sq.sqrt().recip(),
        group_grad_rms: group_sq.sqrt(),
        accept: run.accept.first().copied().unwrap_or(f64::NAN),
    })
}

/// The training configuration of the module docs for `target` from its probe (`cfg.target` =
/// the target's name, `cfg.seed` = `seed`).
pub fn from_probe(target: &Target, probe: &Probe, seed: u64) -> Result<TrainConfig> {
    let particles = target.particles().is_some();
    let base = if particles { "dw4-fast" } else { "gmm-idem" };
    let mut cfg = TrainConfig::preset(base)?;
    let extent = probe.scale_hint.unwrap_or(probe.extent);
    let (data_scale, sigma_max) = if particles {
        (1.0, extent)
    } else {
        (1.1 * extent, 1.0)
    };
    let clip = 2.0 * probe.group_grad_rms * data_scale;
    cfg.target = target.name();
    cfg.seed = seed;
    cfg.mode = Mode::Idem;
    cfg.epochs = AUTO_EPOCHS;
    cfg.ema_decay = AUTO_EMA_DECAY;
    if particles {
        // `dw4-fast` as it was tuned before its quarter-call recipe (2026-12-05): that recipe's K
        // split at σ = 0.1 (target units), its fewer buffer samples, its coordinate range and its
        // refinement were chosen on DW-4's validation split and are not applied to an untuned target
        cfg.num_mc_samples = 1000;
        cfg.dem_small_noise_k = 0;
        cfg.dem_small_noise_sigma = 0.0;
        cfg.samples_per_epoch = 1000;
        cfg.eval_every = 10;
        cfg.refine_steps = 0;
        cfg.reweight_proposals = 0;
        if let NetConfig::Egnn(e) = &mut cfg.net {
            e.coords_range = 15.0;
        }
    } else {
        // a budget for user energies that cost more per call than the built-ins (a numpy
        // function: ~0.3 µs per 2-D configuration here): B·K = 102 400 configurations per step,
        // a quarter of gmm-idem's, and 100 SDE steps per epoch's buffer generation; on
        // Müller–Brown the same basin weights and TV as B = 512, K = 500 (docs/muller-brown.md)
        cfg.batch_size = 256;
        cfg.num_mc_samples = 400;
        cfg.sde.steps = 100;
    }
    cfg.data_scale = data_scale;
    cfg.schedule = NoiseSchedule::geometric(1e-5 * sigma_max, sigma_max)?;
    cfg.dem_blend_sigma = probe.sigma_b / data_scale;
    cfg.dem_guided = true;
    cfg.max_score_norm = clip;
    // the sampler's prior on the target's mean (vectors; particle systems are mean-free)
    cfg.prior_mean = if particles {
        Vec::new()
    } else {
        probe.mean.iter().map(|m| m / data_scale).collect()
    };
    cfg.sde.max_score_norm = Some(clip);
    cfg.validation = String::new();
    cfg.with_overrides(&[])
}

/// Probe `target` and configure a run for it: `(config, probe)`.
pub fn auto_config(target: &Target, scale: Option<f64>, seed: u64) -> Result<(TrainConfig, Probe)> {
    let p = probe(target, scale, seed)?;
    Ok((from_probe(target, &p, seed)?, p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::Gmm;

    #[test]
    fn the_probe_reads_scale_and_width_off_the_target() {
        // N((3, 0), 0.5²I): σ_b = 0.5; the mass reaches |x₀| ≈ 3 + 3.3·0.5 at the 99.9 % level
        let t = Target::new(Gmm::new("g", &[1.0], &[3.0, 0.0], &[0.5, 0.5]).unwrap());
        let (cfg, p) = auto_config(&t, None, 1).unwrap();
        assert!((p.sigma_b - 0.5).abs() < 0.05, "{p:?}");
        assert!((4.0..5.5).contains(&p.extent), "{p:?}");
        assert!(
            (p.mean[0] - 3.0).abs() < 0.1 && p.mean[1].abs() < 0.1,
            "{p:?}"
        );
        assert!(p.energy_calls > 100_000);
        assert_eq!(cfg.target, "g");
        assert!(matches!(cfg.net, crate::net::NetConfig::Mlp(_)));
        assert!((cfg.data_scale - 1.1 * p.extent).abs() < 1e-9);
        assert!((cfg.dem_blend_sigma - p.sigma_b / cfg.data_scale).abs() < 1e-12);
        assert!(cfg.max_score_norm > 0.0 && cfg.epochs == AUTO_EPOCHS);
        // the sampler's prior sits on the target's mean
        assert!((cfg.prior_mean[0] - p.mean[0] / cfg.data_scale).abs() < 1e-12);
        let model =
            crate::model::ScoreModel::with_target(&cfg, t.clone(), &candle_core::Device::Cpu)
                .unwrap();
        let x = model
            .generate(
                400,
                3,
                &crate::reverse_sde::SdeConfig {
                    steps: 50,
                    ..cfg.sde.clone()
                },
                400,
            )
            .unwrap();
        // an untrained network: samples spread around the prior's mean (≈ 3), not the origin
        let m0 = x.chunks(2).map(|r| f64::from(r[0])).sum::<f64>() / 400.0;
        assert!((m0 - 3.0).abs() < 1.0, "{m0}");
        let bad = cfg.with_overrides(&["prior_mean=[1.0]".into()]).unwrap();
        assert!(
            crate::model::ScoreModel::with_target(&bad, t.clone(), &candle_core::Device::Cpu)
                .is_err()
        );
        // a hint sets the extent
        let (cfg2, p2) = auto_config(&t, Some(10.0), 1).unwrap();
        assert_eq!(p2.scale_hint, Some(10.0));
        assert!((cfg2.data_scale - 11.0).abs() < 1e-9);
        assert!(auto_config(&t, Some(-1.0), 1).is_err());
    }

    #[test]
    fn particle_targets_get_the_egnn_in_their_own_units() {
        let t = Target::by_name("dw4").unwrap();
        let (cfg, p) = auto_config(&t, None, 0).unwrap();
        assert!(matches!(cfg.net, crate::net::NetConfig::Egnn(_)));
        assert_eq!(cfg.data_scale, 1.0);
        assert!(cfg.prior_mean.is_empty());
        // DW-4's particles sit ~2 from their centroid (pair distance ~4)
        assert!((1.5..5.0).contains(&p.extent), "{p:?}");
        assert!((cfg.schedule.sigma(1.0) - p.extent).abs() < 1e-6 * p.extent);
        // the base's DW-4-specific choices of 2026-12-05 stay out of an untuned target's run
        assert_eq!((cfg.num_mc_samples, cfg.dem_small_noise_k), (1000, 0));
        assert_eq!((cfg.samples_per_epoch, cfg.refine_steps), (1000, 0));
        assert_eq!(cfg.reweight_proposals, 0);
        let crate::net::NetConfig::Egnn(e) = &cfg.net else {
            unreachable!()
        };
        assert_eq!(e.coords_range, 15.0);
    }
}
