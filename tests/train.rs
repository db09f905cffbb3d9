//! End-to-end tests of training on a tiny budget: the run directory, resume, sampling,
//! evaluation, determinism and divergence handling, through the `idem` binary.

use std::path::Path;
use std::process::Command;

use idem::io::npy;

fn idem(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("run idem");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A budget of a few seconds, on the default preset (`gmm-fast`); K is the same at every noise
/// level (no small-noise K) so that energy-call counts are exact.
const TINY: &[&str] = &[
    "--set",
    "dem_small_noise_k=0",
    "--set",
    "steps_per_epoch=5",
    "--set",
    "batch_size=64",
    "--set",
    "num_mc_samples=32",
    "--set",
    "samples_per_epoch=100",
    "--set",
    "eval_samples=100",
    "--set",
    "num_init_samples=128",
    "--set",
    "sde.steps=40",
    "--set",
    "net.hidden=32",
    "--set",
    "net.emb_size=16",
];

fn train(dir: &Path, extra: &[&str]) -> (bool, String, String) {
    let d = dir.display().to_string();
    let mut args = vec!["train", "--quiet", "--out", &d];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    idem(&args)
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn refinement_is_reported_beside_the_sampler_with_its_energy_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let (ok, out, err) = train(&run, &["--set", "epochs=1", "--set", "refine_steps=6"]);
    assert!(ok, "{err}");
    assert!(out.contains("sampler") && out.contains("refined"), "{out}");
    for f in [
        "samples.npy",
        "samples_refined.npy",
        "plots/refined/samples.png",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    // both figure sets; 100 samples × (one validity check + the chains' start + 6 steps)
    for k in ["w2", "energy_w2", "mean_logp"] {
        assert!(s["validation"][k].is_number() && s["validation_refined"][k].is_number());
    }
    assert_eq!(s["refinement"]["energy_calls"], 100 * (6 + 2));
    assert_eq!(
        s["energy_calls_with_refinement"].as_u64().unwrap(),
        s["energy_calls"].as_u64().unwrap() + 800
    );
    let a = npy::read(&run.join("samples.npy")).unwrap();
    let b = npy::read(&run.join("samples_refined.npy")).unwrap();
    assert_eq!(a.shape, b.shape);
    assert_ne!(a.data, b.data);
}

#[test]
fn importance_resampling_and_its_refinement_are_reported_beside_the_sampler_with_their_energy_calls(
) {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let (ok, out, err) = train(
        &run,
        &[
            "--set",
            "epochs=1",
            "--set",
            "reweight_proposals=300",
            "--set",
            "reweight_cnf_steps=30",
            "--set",
            "refine_steps=4",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("sampler") && out.contains("reweighted"),
        "{out}"
    );
    for f in [
        "samples_reweighted.npy",
        "plots/reweighted/samples.png",
        "samples_reweighted_refined.npy",
        "plots/reweighted_refined/samples.png",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    for k in ["w2", "energy_w2", "mean_logp"] {
        for v in ["validation_reweighted", "validation_reweighted_refined"] {
            assert!(s[v][k].is_number(), "{v} {k}");
        }
    }
    // with both options, the resampled points are refined as `idem sample` does: 300 log p for
    // the proposals, 100 × (4 + 2) for the MALA steps
    assert_eq!(
        s["energy_calls_with_refinement_after_reweighting"]
            .as_u64()
            .unwrap(),
        s["energy_calls"].as_u64().unwrap() + 300 + 600
    );
    // one log p per proposal
    assert_eq!(s["reweighting"]["energy_calls"], 300);
    assert_eq!(s["reweighting"]["proposals"], 300);
    let ess = s["reweighting"]["ess"].as_f64().unwrap();
    assert!(ess > 0.0 && ess <= 1.0, "{ess}");
    let b = npy::read(&run.join("samples_reweighted.npy")).unwrap();
    assert_eq!(b.shape, vec![100, 2]);
    // `idem sample` checks the proposals against its own -n (here fewer than the run's 100)
    let out_s = tmp.path().join("s.npy").display().to_string();
    let d = run.display().to_string();
    let sample = |n: &str, proposals: &str| {
        idem(&[
            "sample",
            "--run",
            &d,
            "-n",
            n,
            "--out",
            &out_s,
            "--set",
            &format!("reweight_proposals={proposals}"),
            "--set",
            "reweight_cnf_steps=10",
            "--set",
            "refine_steps=0",
        ])
    };
    let (ok, _, err) = sample("20", "40");
    assert!(ok, "{err}");
    assert_eq!(npy::read(Path::new(&out_s)).unwrap().shape, vec![20, 2]);
    let (ok, _, err) = sample("50", "40");
    assert!(!ok && err.contains("-n"), "{err}");
    // too few proposals for the samples is refused before training
    let (ok, _, err) = train(
        &tmp.path().join("bad"),
        &["--set", "epochs=1", "--set", "reweight_proposals=50"],
    );
    assert!(!ok && err.contains("reweight_proposals"), "{err}");
}

#[test]
fn train_writes_a_complete_run_and_resume_continues_it() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let (ok, out, err) = train(&run, &["--set", "epochs=2"]);
    assert!(ok, "{err}");
    assert!(out.contains("w2") && out.contains("plots"), "{out}");
    for f in [
        "config.toml",
        "metrics.jsonl",
        "checkpoint.safetensors",
        "best.safetensors",
        "samples.npy",
        "summary.json",
        "plots/samples.png",
        "plots/energy_hist.png",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let m = metrics(&run);
    assert_eq!(m.len(), 2);
    for key in [
        "epoch",
        "loss",
        "wall_s",
        "energy_calls",
        "val_w2",
        "val_energy_w2",
        "val_tv",
    ] {
        assert!(
            m[1].get(key).is_some(),
            "metrics line lacks {key}: {}",
            m[1]
        );
    }
    // DEM calls: 2 epochs × 5 steps × 64 points × 32 samples
    assert_eq!(m[1]["energy_calls"], 2 * 5 * 64 * 32);
    let s = npy::read(&run.join("samples.npy")).unwrap();
    assert_eq!(s.shape, vec![100, 2]);

    // a second `train` into the same directory is refused; resume extends the run
    let (ok, _, err) = train(&run, &["--set", "epochs=3"]);
    assert!(!ok && err.contains("--resume"), "{err}");
    let d = run.display().to_string();
    let (ok, _, err) = idem(&["train", "--quiet", "--resume", &d, "--set", "epochs=3"]);
    assert!(ok, "{err}");
    let m = metrics(&run);
    assert_eq!(
        m.iter()
            .map(|l| l["epoch"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    // sampling from the run and evaluating against exact samples
    let samples = tmp.path().join("s.npy");
    let reference = tmp.path().join("r.npy");
    let sp = samples.display().to_string();
    let rp = reference.display().to_string();
    let (ok, _, err) = idem(&[
        "sample",
        "--run",
        &d,
        "-n",
        "50",
        "--out",
        &sp,
        "--set",
        "final_sde_steps=20",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = idem(&[
        "exact", "--target", "gmm40", "-n", "50", "--seed", "9", "--out", &rp,
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = idem(&[
        "eval",
        "--target",
        "gmm40",
        "--samples",
        &sp,
        "--reference",
        &rp,
        "--json",
        "--w2-chunk",
        "25",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        v["w2"].as_f64().unwrap() > 0.0 && v["tv"].as_f64().unwrap() <= 1.0,
        "{v}"
    );
    // 2 × 2 pairs of 25-point chunks
    assert_eq!(v["w2_chunk_pairs"].as_f64(), Some(4.0), "{v}");
    assert!(v["w2_chunks_se"].as_f64().unwrap().is_finite(), "{v}");
    assert!(v["w2_chunks_mean"].as_f64().unwrap() > 0.0, "{v}");
}

/// Same seed, same numbers; and stopping after epoch 1 then resuming gives the run that was
/// never interrupted (all state — weights, Adam moments, buffer, counters — is in the checkpoint).
#[test]
fn training_is_deterministic_and_resume_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    // 128 initial + 100 generated points in 150 slots: the ring has wrapped when b resumes,
    // so the checkpoint must keep each point's slot for epoch 2 to draw the same batches
    let cap = ["--set", "buffer_capacity=150"];
    assert!(train(&a, &[&["--set", "epochs=2"][..], &cap].concat()).0);
    assert!(train(&b, &[&["--set", "epochs=1"][..], &cap].concat()).0);
    let d = b.display().to_string();
    assert!(idem(&["train", "--quiet", "--resume", &d, "--set", "epochs=2"]).0);
    let read = |p: &Path| npy::read(&p.join("samples.npy")).unwrap().data;
    assert_eq!(read(&a), read(&b));
    let (ma, mb) = (metrics(&a), metrics(&b));
    assert_eq!(ma[1]["loss"], mb[1]["loss"]);
    assert_eq!(ma[1]["val_w2"], mb[1]["val_w2"]);
    // a different seed gives different samples
    let c = tmp.path().join("c");
    assert!(train(&c, &["--set", "epochs=2", "--seed", "5"]).0);
    assert_ne!(read(&a), read(&c));
}

/// A final stage (constant final LR, another clip for target and sampler, another K) changes
/// only its own epochs, and adding it to a finished run by resume gives the run trained with it
/// from the start.
#[test]
fn final_stage_trains_its_epochs_at_the_final_lr_and_clip_and_composes_with_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let stage = [
        "--set",
        "final_stage_epochs=1",
        "--set",
        "final_stage_max_score_norm=3",
        "--set",
        "final_stage_num_mc_samples=37",
        "--set",
        "final_stage_diffusion_scale=0.8",
    ];
    let mut staged = vec!["--set", "epochs=3"];
    staged.extend_from_slice(&stage);
    let (ok, _, err) = train(&a, &staged);
    assert!(ok, "{err}");
    assert!(train(&b, &["--set", "epochs=2"]).0);
    let d = b.display().to_string();
    let mut resume = vec!["train", "--quiet", "--resume", &d, "--set", "epochs=3"];
    resume.extend_from_slice(&stage);
    let (ok, _, err) = idem(&resume);
    assert!(ok, "{err}");
    let read = |p: &Path| npy::read(&p.join("samples.npy")).unwrap().data;
    assert_eq!(read(&a), read(&b));
    let (ma, mb) = (metrics(&a), metrics(&b));
    // the stage's epoch: final LR (cosine 1e-3 → 5%), its clip; the others: the preset's
    let cfg = idem::config::TrainConfig::preset("gmm-idem").unwrap();
    let lr = |l: &serde_json::Value| l["lr"].as_f64().unwrap();
    assert!((lr(&ma[2]) - cfg.lr * cfg.lr_final_fraction).abs() < 1e-12);
    assert!(lr(&ma[1]) > lr(&ma[2]));
    assert_eq!(ma[2]["max_score_norm"], 3.0);
    assert_eq!(ma[1]["max_score_norm"], cfg.max_score_norm);
    assert_eq!(ma[2]["num_mc_samples"], 37);
    assert_ne!(ma[1]["num_mc_samples"], 37);
    assert_eq!(ma[0]["num_mc_samples"], ma[1]["num_mc_samples"]);
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(x["loss"], y["loss"]);
    }
    // (b's epoch 2 was its last, so it alone was evaluated there)
    assert_eq!(ma[2]["val_w2"], mb[2]["val_w2"]);
    // the stage's epochs are not those of the two-epoch run extended without it
    let d = c.display().to_string();
    assert!(train(&c, &["--set", "epochs=2"]).0);
    assert!(idem(&["train", "--quiet", "--resume", &d, "--set", "epochs=3"]).0);
    let mc = metrics(&c);
    assert_eq!(mc[1]["loss"], ma[1]["loss"]);
    assert_ne!(mc[2]["loss"], ma[2]["loss"]);
    assert_ne!(read(&a), read(&c));
}

#[test]
fn divergence_stops_with_an_error_and_bad_settings_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("nan");
    let (ok, _, err) = train(
        &run,
        &[
            "--set",
            "epochs=2",
            "--set",
            "lr=1e30",
            "--set",
            "max_grad_norm=0",
        ],
    );
    assert!(!ok, "a diverging run must fail");
    assert!(
        err.contains("diverged") || err.contains("non-finite"),
        "{err}"
    );
    let (ok, _, err) = idem(&["train", "--preset", "nope"]);
    assert!(!ok && err.contains("gmm-idem"), "{err}");
    let (ok, _, err) = idem(&[
        "train",
        "--set",
        "epoch=3",
        "--out",
        &tmp.path().join("x").display().to_string(),
    ]);
    assert!(!ok && err.contains("unknown setting"), "{err}");
    let (ok, out, _) = idem(&["presets"]);
    assert!(ok && out.contains("gmm-idem") && out.contains("gmm-pdem"));
}

/// A tiny budget for the EGNN presets; the second epoch is a final stage (per-particle clip 40).
const TINY_PARTICLES: &[&str] = &[
    "--set",
    "epochs=2",
    "--set",
    "final_stage_epochs=1",
    "--set",
    "final_stage_max_score_norm=40",
    "--set",
    "final_stage_num_mc_samples=48",
    "--set",
    "steps_per_epoch=3",
    "--set",
    "batch_size=32",
    "--set",
    "num_mc_samples=32",
    "--set",
    "samples_per_epoch=64",
    "--set",
    "eval_samples=64",
    "--set",
    "num_init_samples=64",
    "--set",
    "sde.steps=20",
    "--set",
    "final_sde_steps=20",
    "--set",
    "eval_every=1",
    "--set",
    "net.hidden=16",
    "--set",
    "net.layers=2",
];

/// iDEM with the EGNN on DW-4, end to end: particle metrics (aligned W2, interatomic-distance TV
/// and W1) in the metrics and the summary, distance histograms, mean-free samples, and a
/// sampler that reloads from the run. Validation data: the reference fixture's DW-4
/// configurations (plumbing only; the published splits are not needed).
#[test]
fn particle_training_runs_end_to_end_with_the_egnn() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("dw4");
    let val = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference/dw4_x.npy");
    let d = run.display().to_string();
    let v = format!("validation={}", val.display());
    let mut args = vec![
        "train", "--quiet", "--preset", "dw4-fast", "--out", &d, "--set", &v,
    ];
    args.extend_from_slice(TINY_PARTICLES);
    let (ok, out, err) = idem(&args);
    assert!(ok, "{err}");
    for k in ["aligned_w2", "dist_tv", "dist_w1", "energy_w2", "w2"] {
        assert!(out.contains(k), "final report lacks {k}: {out}");
    }
    for f in [
        "plots/energy_hist.png",
        "plots/distance_hist.png",
        "samples.npy",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let m = metrics(&run);
    assert_eq!(m.len(), 2);
    assert!(m[1]["val_dist_tv"].as_f64().is_some(), "{}", m[1]);
    assert_eq!(m[1]["max_score_norm"], 40.0);
    let s = npy::read(&run.join("samples.npy")).unwrap();
    assert_eq!(s.shape, vec![64, 8]);
    for conf in s.data.chunks(8) {
        for k in 0..2 {
            let mean: f32 = (0..4).map(|i| conf[i * 2 + k]).sum::<f32>() / 4.0;
            assert!(mean.abs() < 1e-4, "sample not mean-free: {conf:?}");
        }
    }
    let o = tmp.path().join("more.npy").display().to_string();
    let (ok, _, err) = idem(&["sample", "--run", &d, "-n", "10", "--out", &o]);
    assert!(ok, "{err}");
}

/// Without validation data a particle run still trains, warns at its start (naming the file it
/// looked for), and says at its end that it could not validate.
#[test]
fn a_run_without_validation_data_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("lj");
    let d = run.display().to_string();
    let mut args = vec!["train", "--quiet", "--preset", "lj13-fast", "--out", &d];
    args.extend_from_slice(TINY_PARTICLES);
    let out = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(&args)
        .env("RAYON_NUM_THREADS", "2")
        .env("IDEM_DATA_DIR", tmp.path())
        .output()
        .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{se}");
    let first = se
        .lines()
        .position(|l| l.contains("warning: no validation data"));
    assert!(
        first.is_some_and(|i| i <= 1) && se.contains("lj13_val.npy"),
        "no start-of-run warning naming the validation file: {se}"
    );
    assert!(so.contains("no validation data"), "{so}");
    assert!(run.join("samples.npy").is_file());
}

#[test]
fn pdem_trains_from_the_prior_and_is_evaluated_on_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("pdem");
    let (ok, _, se) = train(
        &run,
        &[
            "--preset",
            "gmm-pdem",
            "--set",
            "epochs=3",
            "--set",
            "eval_every=2",
        ],
    );
    assert!(ok, "{se}");
    let lines = metrics(&run);
    assert_eq!(lines.len(), 3);
    for l in &lines {
        assert_eq!(l["buffer"], 0, "pDEM must not fill a replay buffer: {l}");
        let evaluated = l
            .get("val_w2")
            .is_some_and(|w| w.as_f64().is_some_and(f64::is_finite));
        let epoch = l["epoch"].as_u64().unwrap();
        assert_eq!(
            evaluated,
            epoch != 1,
            "validation at epochs 2 and 3 only: {l}"
        );
    }
    assert!(run.join("samples.npy").is_file());
}

/// PIS and DDS train through the shared loop: the run directory, their diagnostics in
/// metrics.jsonl, energy calls (one log p + ∇log p per path and step, plus the terminal one),
/// exact resume, and `idem sample` drawing from the controlled SDE.
#[test]
fn pis_and_dds_train_resume_exactly_and_sample() {
    let tmp = tempfile::tempdir().unwrap();
    for mode in ["pis", "dds"] {
        let preset = format!("gmm-{mode}");
        let small = [
            "--preset",
            &preset,
            "--set",
            "path.steps=10",
            "--set",
            "eval_every=2",
        ];
        let (a, b) = (
            tmp.path().join(format!("{mode}-a")),
            tmp.path().join(format!("{mode}-b")),
        );
        let (ok, _, se) = train(&a, &[&small[..], &["--set", "epochs=2"]].concat());
        assert!(ok, "{mode}: {se}");
        assert!(train(&b, &[&small[..], &["--set", "epochs=1"]].concat()).0);
        let d = b.display().to_string();
        assert!(idem(&["train", "--quiet", "--resume", &d, "--set", "epochs=2"]).0);
        let read = |p: &Path| npy::read(&p.join("samples.npy")).unwrap().data;
        assert_eq!(read(&a), read(&b), "{mode}: resume must be exact");
        let (ma, mb) = (metrics(&a), metrics(&b));
        assert_eq!(ma[1]["loss"], mb[1]["loss"]);
        for l in &ma {
            for k in [
                "path_running_cost",
                "path_terminal",
                "path_log_z",
                "path_ess",
            ] {
                assert!(
                    l[k].as_f64().is_some_and(f64::is_finite),
                    "{mode}: {k} in {l}"
                );
            }
            assert_eq!(l["buffer"], 0);
        }
        assert!(ma[1]["val_w2"].as_f64().is_some_and(f64::is_finite));
        assert!(ma[0].get("val_w2").is_none(), "validation on epoch 2 only");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(a.join("summary.json")).unwrap())
                .unwrap();
        let pi = &summary["path_importance"];
        assert!(
            pi["log_z"].as_f64().is_some_and(f64::is_finite),
            "{summary}"
        );
        assert!(
            pi["ess"].as_f64().is_some_and(|e| e > 0.0 && e <= 1.0),
            "{summary}"
        );
        assert_eq!(pi["paths"], 100);
        // 64 paths × (10 steps + terminal) per gradient step, 5 steps per epoch; epoch 2 also
        // generates its 100 validation samples (their calls are not training's)
        assert_eq!(ma[0]["energy_calls"], 5 * 64 * 11);
        let out = tmp.path().join(format!("{mode}.npy"));
        let o = out.display().to_string();
        let (ok, _, se) = idem(&[
            "sample",
            "--run",
            &a.display().to_string(),
            "-n",
            "30",
            "--out",
            &o,
        ]);
        assert!(ok, "{mode}: {se}");
        let s = npy::read(&out).unwrap();
        assert_eq!(s.shape, vec![30, 2]);
        assert!(s.data.iter().all(|v| v.is_finite()));
    }
}

/// `init_from`: a DW-4 run (4 particles in 2-D) initialises an LJ-13 run (13 in 3-D) with the
/// same EGNN settings — the new run starts at the source's sampling (EMA) weights, and trains
/// from there; a network of other shapes and a missing source are refused with clear errors.
#[test]
fn init_from_starts_a_larger_particle_system_at_a_smaller_ones_weights() {
    use idem::config::TrainConfig;
    use idem::model::ScoreModel;
    use idem::train::Trainer;

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("dw4");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    let d = src.display().to_string();
    let v = format!("validation={}", fixtures.join("dw4_x.npy").display());
    let mut args = vec![
        "train", "--quiet", "--preset", "dw4-fast", "--out", &d, "--set", &v,
    ];
    args.extend_from_slice(TINY_PARTICLES);
    let (ok, _, err) = idem(&args);
    assert!(ok, "{err}");

    let device = candle_core::Device::Cpu;
    let source = ScoreModel::load(&src, "best.safetensors", &device).unwrap();
    let lj13 = |extra: &[&str]| {
        let mut sets: Vec<String> = vec![
            format!("validation={}", fixtures.join("lj13_x.npy").display()),
            format!("init_from={}", src.display()),
            "net.hidden=16".into(),
            "net.layers=2".into(),
        ];
        sets.extend(extra.iter().map(|s| s.to_string()));
        TrainConfig::preset("lj13-fast")
            .unwrap()
            .with_overrides(&sets)
            .unwrap()
    };
    let values = |m: &ScoreModel| -> Vec<(String, Vec<f32>)> {
        m.params
            .vars()
            .map(|(k, v)| {
                let t = v
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                (k.clone(), t)
            })
            .collect()
    };
    let t = Trainer::create(&lj13(&[]), &tmp.path().join("lj13"), &device).unwrap();
    let (got, want) = (values(&t.model), values(&source));
    assert_eq!(got.len(), want.len());
    for ((k, a), (k2, b)) in got.iter().zip(&want) {
        assert_eq!(k, k2);
        assert_eq!(a, b, "tensor {k} not taken from the source run");
    }
    // without init_from the same seed gives other (random) weights
    let fresh = Trainer::create(
        &lj13(&["init_from=\"\""]),
        &tmp.path().join("lj13-fresh"),
        &device,
    )
    .unwrap();
    assert_ne!(values(&fresh.model), want);

    let wider = Trainer::create(&lj13(&["net.hidden=32"]), &tmp.path().join("w"), &device);
    let e = wider.err().expect("shape mismatch refused").to_string();
    assert!(e.contains("init_from") && e.contains("shape"), "{e}");
    // and trains from there, through the command line
    let out = tmp.path().join("lj13-cli").display().to_string();
    let (v, i) = (
        format!("validation={}", fixtures.join("lj13_x.npy").display()),
        format!("init_from={}", src.display()),
    );
    let mut args = vec![
        "train",
        "--quiet",
        "--preset",
        "lj13-fast",
        "--out",
        &out,
        "--set",
        &v,
        "--set",
        &i,
    ];
    args.extend_from_slice(TINY_PARTICLES);
    let (ok, _, err) = idem(&args);
    assert!(ok, "{err}");
    let cfg = std::fs::read_to_string(tmp.path().join("lj13-cli/config.toml")).unwrap();
    assert!(cfg.contains("init_from"), "{cfg}");
    let mut missing = lj13(&[]);
    missing.init_from = tmp.path().join("nowhere").display().to_string();
    let e = Trainer::create(&missing, &tmp.path().join("m"), &device)
        .err()
        .expect("missing source refused")
        .to_string();
    assert!(e.contains("neither"), "{e}");
}

/// `validation_samples` sizes the checks during training; the final samples keep `eval_samples`.
#[test]
fn validation_samples_size_the_checks_and_not_the_final_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("v");
    let (ok, _, err) = train(
        &run,
        &[
            "--set",
            "epochs=2",
            "--set",
            "eval_every=1",
            "--set",
            "samples_per_epoch=20",
            "--set",
            "validation_samples=40",
        ],
    );
    assert!(ok, "{err}");
    let m = metrics(&run);
    assert_eq!(m.len(), 2);
    for line in &m {
        assert_eq!(line["val_w2_rows"], 40.0, "{line}");
    }
    let s = npy::read(&run.join("samples.npy")).unwrap();
    assert_eq!(s.shape, vec![100, 2]);
}
