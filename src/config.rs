//! Training configuration: built-in presets (`presets/*.toml`, embedded), `key=value` overrides
//! and validation. The resolved configuration is saved in every run directory.

use serde::{Deserialize, Serialize};

use crate::controlled_sde::PathConfig;
use crate::error::{Error, Result};
use crate::net::optim::LrSchedule;
use crate::net::NetConfig;
use crate::noise_schedule::NoiseSchedule;
use crate::reverse_sde::SdeConfig;

/// Built-in presets: (name, TOML text).
pub const PRESETS: &[(&str, &str)] = &[
    ("gmm-idem", include_str!("../presets/gmm-idem.toml")),
    ("gmm-fast", include_str!("../presets/gmm-fast.toml")),
    ("gmm-pdem", include_str!("../presets/gmm-pdem.toml")),
    ("gmm-pis", include_str!("../presets/gmm-pis.toml")),
    ("gmm-dds", include_str!("../presets/gmm-dds.toml")),
    ("dw4-idem", include_str!("../presets/dw4-idem.toml")),
    ("dw4-pdem", include_str!("../presets/dw4-pdem.toml")),
    ("dw4-fast", include_str!("../presets/dw4-fast.toml")),
    ("dw4-pis", include_str!("../presets/dw4-pis.toml")),
    ("dw4-dds", include_str!("../presets/dw4-dds.toml")),
    ("lj13-idem", include_str!("../presets/lj13-idem.toml")),
    ("lj13-pdem", include_str!("../presets/lj13-pdem.toml")),
    ("lj13-fast", include_str!("../presets/lj13-fast.toml")),
    ("lj55-fast", include_str!("../presets/lj55-fast.toml")),
    ("lj13-pis", include_str!("../presets/lj13-pis.toml")),
    ("lj13-dds", include_str!("../presets/lj13-dds.toml")),
    ("lj55-idem", include_str!("../presets/lj55-idem.toml")),
];

/// Where training points come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// From the replay buffer of the model's own samples (iDEM).
    Idem,
    /// From the prior N(0, h(1)I) (pDEM).
    Pdem,
    /// Path Integral Sampler: a controlled SDE trained by simulation (`method::pis`).
    Pis,
    /// Denoising Diffusion Sampler: the same with an Ornstein–Uhlenbeck reference
    /// (`method::dds`).
    Dds,
}

impl Mode {
    /// Whether the method trains a DEM score network (iDEM, pDEM) rather than a control
    /// simulated by `controlled_sde` (PIS, DDS).
    pub fn is_dem(self) -> bool {
        matches!(self, Self::Idem | Self::Pdem)
    }
}

/// How the iDEM buffer is filled before the first generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BufferInit {
    /// Samples of the prior N(0, h(1)I).
    Prior,
    /// The reverse SDE driven by the Monte-Carlo DEM target itself (the reference's default).
    Estimator,
}

/// Every setting of a training run. Coordinates seen by the network, the buffer and the sampler
/// are the target's divided by `data_scale`; σ and score-norm values are in those coordinates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub target: String,
    pub mode: Mode,
    pub seed: u64,
    pub epochs: usize,
    pub steps_per_epoch: usize,
    pub batch_size: usize,
    /// K, Monte-Carlo samples of the DEM target.
    pub num_mc_samples: usize,
    pub lr: f64,
    pub lr_schedule: LrSchedule,
    /// For the cosine schedule: final lr as a fraction of `lr`.
    pub lr_final_fraction: f64,
    /// Global gradient-norm clipping (0 = off).
    pub max_grad_norm: f64,
    /// EMA of the weights used for generation (0 = off).
    pub ema_decay: f64,
    /// Network coordinates = target coordinates / data_scale.
    pub data_scale: f64,
    /// Clipping norm of the DEM target (per particle), network coordinates; 0 = off.
    pub max_score_norm: f64,
    /// Final stage (0 = off): the last `final_stage_epochs` of the `epochs` train at the LR
    /// schedule's final value (the schedule runs over the epochs before them), with the DEM target
    /// and the sampler clipped at `final_stage_max_score_norm` instead of `max_score_norm` and
    /// `sde.max_score_norm`. The final samples and `idem sample` use that sampler clip. A low clip
    /// speeds up learning the structure; the stage then fits the steeper forces it hid (LJ-13's
    /// repulsive wall). A run of N epochs resumed with `epochs = N + M`, `final_stage_epochs = M` is
    /// the run trained with those settings from the start.
    #[serde(default)]
    pub final_stage_epochs: usize,
    /// Per-particle clipping norm of the DEM target and of the sampler in the final stage,
    /// network coordinates (> 0 when the stage is on).
    #[serde(default)]
    pub final_stage_max_score_norm: f64,
    /// K of the DEM target in the final stage (0 = `num_mc_samples`). The self-normalised
    /// estimate's finite-K error is largest at the noise levels that set the samples' energy
    /// (few effective samples), and the stage is short, so a larger K there is cheap (README).
    #[serde(default)]
    pub final_stage_num_mc_samples: usize,
    /// Diffusion scale λ of the sampler in the final stage — its buffer generation, the final
    /// samples and `idem sample` (0 = `sde.diffusion_scale`).
    #[serde(default)]
    pub final_stage_diffusion_scale: f64,
    /// σ_b of the blended DEM estimator (`dem_target` module docs), network coordinates;
    /// 0 = the reference's estimator S_K.
    #[serde(default)]
    pub dem_blend_sigma: f64,
    /// K of the DEM target for training points at noise level σ(t) ≤ `dem_small_noise_sigma`
    /// (0 = `num_mc_samples` everywhere; `dem_target` docs, "Fewer samples at small noise").
    #[serde(default)]
    pub dem_small_noise_k: usize,
    /// σ (network coordinates) at or below which `dem_small_noise_k` applies.
    #[serde(default)]
    pub dem_small_noise_sigma: f64,
    /// Mean of the sampler's prior N(m, h(1)I) in network coordinates (empty: the origin, as the
    /// reference). The noised target p ∗ N(0, h(1)I) is centred on the target's mean, not on the
    /// origin; the automatic configuration sets m to the probe's mean (vector targets).
    #[serde(default)]
    pub prior_mean: Vec<f64>,
    /// Draw the DEM target's noise from the model-guided proposal N(h·s_θ(x, t), hI), reweighted
    /// (`dem_target` module docs); false = the reference's N(0, hI).
    #[serde(default)]
    pub dem_guided: bool,
    /// λ(t) = h(t) + ε weighting of the loss; a negative value disables weighting (λ = 1).
    pub loss_weight_eps: f64,
    pub buffer_capacity: usize,
    pub buffer_init: BufferInit,
    pub num_init_samples: usize,
    /// Samples generated into the buffer after every epoch.
    pub samples_per_epoch: usize,
    /// Evaluate on the validation set every this many epochs (the last epoch always).
    pub eval_every: usize,
    /// Samples generated for each evaluation and for the final `samples.npy`.
    pub eval_samples: usize,
    /// Samples generated for each validation during training (0 = `eval_samples`); fewer make
    /// the checks cheap where sampling is dear (LJ-55). The final `samples.npy` and its
    /// evaluation always use `eval_samples`.
    #[serde(default)]
    pub validation_samples: usize,
    /// Validation (model-selection) data: empty for the built-in choice — GMM-40's exact sampler
    /// with `train::VALIDATION_SEED`, or `<IDEM_DATA_DIR>/<target>_val.npy` where that file exists
    /// (DW-4, LJ-13) — else the path of a `.npy` file. Without data, runs skip validation.
    #[serde(default)]
    pub validation: String,
    /// Initial network weights (empty: random, from `seed`): a run directory — its
    /// `best.safetensors`, else its `checkpoint.safetensors` — or a checkpoint file. The weights
    /// the run samples with are taken (EMA when it kept one) and must have this network's shapes;
    /// the EGNN's do not depend on the particle count, so a run on a small system (LJ-13) can
    /// start one on a larger (LJ-55). Only the weights: optimiser, buffer and counters start fresh.
    #[serde(default)]
    pub init_from: String,
    /// Refinement of the final samples (0 = off): this many MALA steps from each sample, the first
    /// half adapting the step size (`refine` module docs). The run reports the sampler's figures
    /// and the refined ones side by side, with the refinement's energy calls; `idem sample` uses it
    /// too. At least 2 when on.
    #[serde(default)]
    pub refine_steps: usize,
    /// Importance resampling of the final samples (0 = off): a CNF is fitted by flow matching
    /// on the sampler's samples, this many CNF samples are drawn with their exact density q,
    /// weighted by p̃/q and resampled to `eval_samples` points (`importance_resampling` docs).
    /// Reported beside the sampler's figures with its ESS and energy calls (one per proposal).
    /// At least `eval_samples` when on.
    #[serde(default)]
    pub reweight_proposals: usize,
    /// Flow-matching steps of that CNF (0 = the target's CNF preset, as `idem nll`).
    #[serde(default)]
    pub reweight_cnf_steps: usize,
    /// Euler–Maruyama steps for the final samples and `idem sample` (the per-epoch buffer
    /// generation uses `sde.steps`, usually fewer: it runs every epoch).
    pub final_sde_steps: usize,
    pub schedule: NoiseSchedule,
    pub sde: SdeConfig,
    pub net: NetConfig,
    /// The PIS / DDS chain (`mode = "pis"|"dds"`; unused by iDEM and pDEM).
    #[serde(default)]
    pub path: PathConfig,
}

impl TrainConfig {
    /// A built-in preset by name.
    pub fn preset(name: &str) -> Result<Self> {
        let text = PRESETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown preset `{name}`; built-in presets: {}",
                    PRESETS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        Self::from_toml(text)
    }

    /// Parse and validate a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| Error::Config(format!("{e}")))?;
        cfg.validated()
    }

    /// The sampler settings for final samples: those of the last epoch (`sde_at`) with
    /// `final_sde_steps` steps.
    pub fn final_sde(&self) -> SdeConfig {
        SdeConfig {
            steps: self.final_sde_steps,
            ..self.sde_at(self.epochs - 1)
        }
    }

    /// Whether epoch `e` (0-based: the epoch being trained) is in the final stage.
    pub fn in_final_stage(&self, e: usize) -> bool {
        self.final_stage_epochs > 0 && e + self.final_stage_epochs >= self.epochs
    }

    /// Learning rate of epoch `e`: the schedule over the epochs before the final stage, at
    /// progress e / that count; its final value during the stage.
    pub fn lr_at(&self, e: usize) -> f64 {
        let progress = if self.in_final_stage(e) {
            1.0
        } else {
            e as f64 / (self.epochs - self.final_stage_epochs) as f64
        };
        self.lr_schedule
            .lr(self.lr, progress, self.lr_final_fraction)
    }

    /// Per-particle clipping norm of the DEM target in epoch `e`, network coordinates; 0 = off.
    pub fn target_clip_at(&self, e: usize) -> f64 {
        if self.in_final_stage(e) {
            self.final_stage_max_score_norm
        } else {
            self.max_score_norm
        }
    }

    /// K of the DEM target in epoch `e`: `final_stage_num_mc_samples` in the final stage when
    /// set, else `num_mc_samples`.
    pub fn mc_samples_at(&self, e: usize) -> usize {
        if self.in_final_stage(e) && self.final_stage_num_mc_samples > 0 {
            self.final_stage_num_mc_samples
        } else {
            self.num_mc_samples
        }
    }

    /// Sampler settings of epoch `e`: `sde`, with the final stage's clip during the stage.
    pub fn sde_at(&self, e: usize) -> SdeConfig {
        let mut sde = self.sde.clone();
        if self.in_final_stage(e) {
            sde.max_score_norm = Some(self.final_stage_max_score_norm);
            if self.final_stage_diffusion_scale > 0.0 {
                sde.diffusion_scale = self.final_stage_diffusion_scale;
            }
        }
        sde
    }

    /// This configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a configuration always serialises")
    }

    /// Apply `key=value` overrides (dotted keys reach into tables, e.g. `sde.steps=500`; values
    /// are TOML, a bare word is taken as a string), then validate.
    pub fn with_overrides(&self, sets: &[String]) -> Result<Self> {
        let mut doc: toml::Table = toml::from_str(&self.to_toml()).expect("own TOML parses");
        for s in sets {
            let (key, raw) = s
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("override `{s}` is not key=value")))?;
            let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|t| t.get("v").cloned())
                .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
            let path: Vec<&str> = key.trim().split('.').collect();
            let mut table = &mut doc;
            for (i, part) in path.iter().enumerate() {
                if i + 1 == path.len() {
                    if !table.contains_key(*part) && !optional_key(part) {
                        return Err(Error::Config(format!("unknown setting `{key}`")));
                    }
                    table.insert(part.to_string(), value.clone());
                } else {
                    table = table
                        .get_mut(*part)
                        .and_then(|v| v.as_table_mut())
                        .ok_or_else(|| Error::Config(format!("unknown setting `{key}`")))?;
                }
            }
        }
        let cfg: Self = toml::Value::Table(doc)
            .try_into()
            .map_err(|e| Error::Config(format!("{e}")))?;
        cfg.validated()
    }

    fn validated(self) -> Result<Self> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.epochs == 0 || self.steps_per_epoch == 0 || self.batch_size == 0 {
            return bad("epochs, steps_per_epoch and batch_size must be positive");
        }
        if self.num_mc_samples == 0
            || self.samples_per_epoch == 0
            || self.eval_samples == 0
            || self.final_sde_steps == 0
        {
            return bad("num_mc_samples, samples_per_epoch and eval_samples must be positive");
        }
        if self.refine_steps == 1 {
            return bad(
                "refine_steps must be 0 (off) or at least 2 (half of them adapt the step size)",
            );
        }
        if self.reweight_proposals != 0 && self.reweight_proposals < self.eval_samples {
            return bad(
                "reweight_proposals must be 0 (off) or at least eval_samples (in `idem sample`: -n)",
            );
        }
        if !(self.lr > 0.0 && self.data_scale > 0.0) || self.max_grad_norm < 0.0 {
            return bad("lr and data_scale must be positive, max_grad_norm ≥ 0");
        }
        if !(0.0..1.0).contains(&self.ema_decay) || self.max_score_norm < 0.0 {
            return bad("ema_decay must be in [0, 1) and max_score_norm ≥ 0");
        }
        if !(self.dem_blend_sigma >= 0.0 && self.dem_blend_sigma.is_finite()) {
            return bad("dem_blend_sigma must be ≥ 0 and finite (0 = off)");
        }
        if self.final_stage_epochs >= self.epochs {
            return Err(Error::Config(format!(
                "final_stage_epochs ({}) must be fewer than epochs ({}): lower it, or set \
                 final_stage_epochs=0 to train without the final stage",
                self.final_stage_epochs, self.epochs
            )));
        }
        if self.final_stage_epochs > 0
            && !(self.final_stage_max_score_norm > 0.0
                && self.final_stage_max_score_norm.is_finite())
        {
            return bad(
                "final_stage_max_score_norm must be positive and finite when the final stage is on",
            );
        }
        if !(self.final_stage_diffusion_scale >= 0.0
            && self.final_stage_diffusion_scale.is_finite())
        {
            return bad(
                "final_stage_diffusion_scale must be ≥ 0 and finite (0 = sde.diffusion_scale)",
            );
        }
        if !(self.dem_small_noise_sigma >= 0.0 && self.dem_small_noise_sigma.is_finite()) {
            return bad("dem_small_noise_sigma must be ≥ 0 and finite");
        }
        if self.prior_mean.iter().any(|v| !v.is_finite()) {
            return bad("prior_mean must be finite");
        }
        if self.buffer_capacity == 0 || self.eval_every == 0 {
            return bad("buffer_capacity and eval_every must be positive");
        }
        self.schedule.validated()?;
        if !self.mode.is_dem() {
            self.path.validated()?;
        }
        Ok(self)
    }
}

/// Settings that may be absent from a TOML file (optional values) yet set by an override.
fn optional_key(k: &str) -> bool {
    matches!(
        k,
        "max_score_norm"
            | "dem_blend_sigma"
            | "dem_guided"
            | "dem_small_noise_k"
            | "dem_small_noise_sigma"
            | "final_stage_epochs"
            | "final_stage_max_score_norm"
            | "final_stage_num_mc_samples"
            | "final_stage_diffusion_scale"
            | "prior_mean"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_round_trip() {
        for (name, _) in PRESETS {
            let c = TrainConfig::preset(name).unwrap();
            assert_eq!(TrainConfig::from_toml(&c.to_toml()).unwrap(), c);
        }
        assert_eq!(TrainConfig::preset("gmm-pdem").unwrap().mode, Mode::Pdem);
        assert!(TrainConfig::preset("nope")
            .unwrap_err()
            .to_string()
            .contains("gmm-idem"));
    }

    #[test]
    fn gmm_fast_is_gmm_idem_at_a_quarter_of_the_training_energy_calls_with_a_finer_time_embedding()
    {
        let (q, full) = (
            TrainConfig::preset("gmm-fast").unwrap(),
            TrainConfig::preset("gmm-idem").unwrap(),
        );
        // expected training calls: training times are uniform on [0, 1], σ(t) geometric
        let per_point = |c: &TrainConfig| {
            let n = 100_000;
            (0..n)
                .map(|i| {
                    let t = (i as f64 + 0.5) / n as f64;
                    let sigma = c.schedule.sigma(t);
                    if c.dem_small_noise_k > 0 && sigma <= c.dem_small_noise_sigma {
                        c.dem_small_noise_k as f64
                    } else {
                        c.num_mc_samples as f64
                    }
                })
                .sum::<f64>()
                / n as f64
        };
        let calls =
            |c: &TrainConfig| (c.epochs * c.steps_per_epoch * c.batch_size) as f64 * per_point(c);
        let ratio = calls(&q) / calls(&full);
        assert!(ratio <= 0.25 && ratio > 0.2, "{ratio}");
        // nothing else differs but the time embedding's scale
        let (NetConfig::Mlp(qn), NetConfig::Mlp(fulln)) = (&q.net, &full.net) else {
            panic!("GMM presets use the MLP");
        };
        assert_eq!((qn.t_emb_scale, fulln.t_emb_scale), (50.0, 1.0));
        let same = TrainConfig {
            epochs: full.epochs,
            dem_small_noise_k: full.dem_small_noise_k,
            dem_small_noise_sigma: full.dem_small_noise_sigma,
            net: NetConfig::Mlp(crate::net::MlpConfig {
                t_emb_scale: fulln.t_emb_scale,
                ..qn.clone()
            }),
            ..q.clone()
        };
        assert_eq!(same, full);
    }

    #[test]
    fn blend_sigma_defaults_to_off_and_is_validated() {
        // configurations written before the setting existed load with the reference estimator
        let c = TrainConfig::preset("gmm-idem").unwrap();
        assert!(c.dem_blend_sigma > 0.0);
        // the preset's TOML with one setting's line removed, as a configuration written before it existed
        let without = |key: &str| -> String {
            c.to_toml()
                .lines()
                .filter(|l| !l.starts_with(key))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let old = without("dem_blend_sigma");
        assert_eq!(TrainConfig::from_toml(&old).unwrap().dem_blend_sigma, 0.0);
        // likewise the model-guided proposal: off unless set
        let old_g = without("dem_guided");
        assert!(!TrainConfig::from_toml(&old_g).unwrap().dem_guided);
        assert!(
            c.with_overrides(&["dem_guided=true".into()])
                .unwrap()
                .dem_guided
        );
        for bad in ["dem_blend_sigma=-0.1", "dem_blend_sigma=inf"] {
            assert!(c.with_overrides(&[bad.into()]).is_err(), "{bad}");
        }
        // validation samples: eval_samples unless set
        let old_v = without("validation_samples");
        assert_eq!(
            TrainConfig::from_toml(&old_v).unwrap().validation_samples,
            0
        );
        // the refinement option: off unless set; one step cannot both adapt and sample
        let old_r = without("refine_steps");
        assert_eq!(TrainConfig::from_toml(&old_r).unwrap().refine_steps, 0);
        assert!(c.with_overrides(&["refine_steps=1".into()]).is_err());
        assert_eq!(
            c.with_overrides(&["refine_steps=2".into()])
                .unwrap()
                .refine_steps,
            2
        );
    }

    #[test]
    fn final_stage_changes_lr_and_clips_of_its_epochs_only() {
        let c = TrainConfig::preset("gmm-idem").unwrap();
        // off unless set, also for configurations written before it existed
        assert_eq!(c.final_stage_epochs, 0);
        let old: String = c
            .to_toml()
            .lines()
            .filter(|l| !l.starts_with("final_stage"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(TrainConfig::from_toml(&old).unwrap(), c);
        let base = c
            .with_overrides(&[
                "epochs=10".into(),
                "lr_schedule=\"cosine\"".into(),
                "lr_final_fraction=0.1".into(),
                "max_score_norm=20".into(),
                "sde.max_score_norm=20".into(),
            ])
            .unwrap();
        let staged = base
            .with_overrides(&[
                "epochs=13".into(),
                "final_stage_epochs=3".into(),
                "final_stage_max_score_norm=80".into(),
            ])
            .unwrap();
        for e in 0..10 {
            // the epochs before the stage are those of the run without it
            assert!(!staged.in_final_stage(e));
            assert_eq!(staged.lr_at(e), base.lr_at(e));
            assert_eq!(staged.target_clip_at(e), 20.0);
            assert_eq!(staged.sde_at(e), base.sde);
            assert_eq!(staged.mc_samples_at(e), base.num_mc_samples);
        }
        assert!((base.lr_at(0) - base.lr).abs() < 1e-15);
        for e in 10..13 {
            assert!(staged.in_final_stage(e));
            assert!((staged.lr_at(e) - 0.1 * staged.lr).abs() < 1e-15);
            assert_eq!(staged.target_clip_at(e), 80.0);
            assert_eq!(staged.sde_at(e).max_score_norm, Some(80.0));
            // K stays unless the stage sets its own
            assert_eq!(staged.mc_samples_at(e), base.num_mc_samples);
        }
        let more_k = staged
            .with_overrides(&["final_stage_num_mc_samples=4000".into()])
            .unwrap();
        assert_eq!(more_k.mc_samples_at(9), base.num_mc_samples);
        assert_eq!(more_k.mc_samples_at(10), 4000);
        assert_eq!(more_k.final_sde().diffusion_scale, base.sde.diffusion_scale);
        let cooler = staged
            .with_overrides(&["final_stage_diffusion_scale=0.8".into()])
            .unwrap();
        assert_eq!(cooler.sde_at(9).diffusion_scale, base.sde.diffusion_scale);
        assert_eq!(cooler.sde_at(10).diffusion_scale, 0.8);
        assert_eq!(cooler.final_sde().diffusion_scale, 0.8);
        assert!(staged
            .with_overrides(&["final_stage_diffusion_scale=-1".into()])
            .is_err());
        // final samples use the last epoch's sampler
        assert_eq!(staged.final_sde().max_score_norm, Some(80.0));
        assert_eq!(staged.final_sde().steps, staged.final_sde_steps);
        assert_eq!(base.final_sde().max_score_norm, Some(20.0));
        for bad in [
            &["final_stage_epochs=3"][..], // no clip given
            &["final_stage_epochs=10", "final_stage_max_score_norm=80"],
            &["final_stage_epochs=2", "final_stage_max_score_norm=-1"],
        ] {
            let sets: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(base.with_overrides(&sets).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn overrides_reach_nested_keys_and_reject_unknown_ones() {
        let c = TrainConfig::preset("gmm-idem").unwrap();
        let o = c
            .with_overrides(&[
                "epochs=3".into(),
                "sde.steps=50".into(),
                "schedule.sigma_max=2.0".into(),
                "mode=pdem".into(),
                "sde.max_score_norm=10".into(),
            ])
            .unwrap();
        assert_eq!((o.epochs, o.sde.steps, o.mode), (3, 50, Mode::Pdem));
        assert_eq!(o.sde.max_score_norm, Some(10.0));
        assert!(c.with_overrides(&["epoch=3".into()]).is_err());
        assert!(c.with_overrides(&["sde.stepz=3".into()]).is_err());
        assert!(c.with_overrides(&["epochs=0".into()]).is_err());
        assert!(c.with_overrides(&["epochs".into()]).is_err());
    }
}
