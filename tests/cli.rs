//! End-to-end tests of the `idem` binary: energy evaluation on files, bad input, benchmark output.

mod common;
use std::path::Path;
use std::process::Command;

use idem::io::npy;

fn idem(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(args)
        .output()
        .expect("run idem");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn fixture_path(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn energy_command_reproduces_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let lp = dir.path().join("lp.npy");
    let g = dir.path().join("g.npy");
    let (ok, _, err) = idem(&[
        "energy",
        "--target",
        "dw4",
        "--input",
        &fixture_path("dw4_x.npy"),
        "--out",
        lp.to_str().unwrap(),
        "--grad",
        g.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let lp = npy::read(&lp).unwrap();
    let g = npy::read(&g).unwrap();
    assert_eq!(
        (lp.shape.clone(), g.shape.clone()),
        (vec![512], vec![512, 8])
    );
    let lp_ref = common::fixture("dw4_logp.npy");
    for (a, b) in lp.data.iter().zip(&lp_ref.data) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0));
    }
}

#[test]
fn energy_command_rejects_bad_input_and_leaves_outputs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lp.npy");
    std::fs::write(&out, b"previous results").unwrap();
    let o = out.to_str().unwrap();
    // wrong dimension for the target
    let (ok, _, err) = idem(&[
        "energy",
        "--target",
        "lj13",
        "--input",
        &fixture_path("dw4_x.npy"),
        "--out",
        o,
    ]);
    assert!(
        !ok && err.contains("expected [N, 39] or [N, 13, 3]"),
        "{err}"
    );
    // corrupt file
    let bad = dir.path().join("bad.npy");
    std::fs::write(&bad, b"\x93NUMPY garbage").unwrap();
    let (ok, _, err) = idem(&[
        "energy",
        "--target",
        "dw4",
        "--input",
        bad.to_str().unwrap(),
        "--out",
        o,
    ]);
    assert!(!ok && err.contains("bad.npy"), "{err}");
    // NaN coordinates
    let nan = dir.path().join("nan.npy");
    npy::write(
        &nan,
        &[0.0, 1.0, f32::NAN, 0.0, 1.0, 1.0, 2.0, 2.0],
        &[1, 8],
    )
    .unwrap();
    let (ok, _, err) = idem(&[
        "energy",
        "--target",
        "dw4",
        "--input",
        nan.to_str().unwrap(),
        "--out",
        o,
    ]);
    assert!(!ok && err.contains("non-finite"), "{err}");
    // unknown target and missing file
    let (ok, _, err) = idem(&[
        "energy",
        "--target",
        "lj",
        "--input",
        &fixture_path("dw4_x.npy"),
        "--out",
        o,
    ]);
    assert!(
        !ok && err.contains("unknown target") && err.contains("lj55"),
        "{err}"
    );
    let (ok, _, err) = idem(&[
        "energy",
        "--target",
        "dw4",
        "--input",
        "/nonexistent.npy",
        "--out",
        o,
    ]);
    assert!(!ok && err.contains("cannot read"), "{err}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"previous results",
        "a failed run must not touch --out"
    );
}

#[test]
fn energy_command_reports_overlapping_particles() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.npy");
    let mut conf: Vec<f32> = (0..39).map(|i| (i as f32 * 0.37).sin() * 1.5).collect();
    let (a, b) = conf.split_at_mut(3);
    b[..3].copy_from_slice(a); // particle 1 on particle 0
    npy::write(&x, &conf, &[1, 13, 3]).unwrap();
    let lp = dir.path().join("lp.npy");
    let g = dir.path().join("g.npy");
    let (ok, _, err) = idem(&[
        "energy",
        "--target",
        "lj13",
        "--input",
        x.to_str().unwrap(),
        "--out",
        lp.to_str().unwrap(),
        "--grad",
        g.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("1 of 1 configurations are invalid"), "{err}");
    assert_eq!(npy::read(&lp).unwrap().data, vec![f32::NEG_INFINITY]);
    let g = npy::read(&g).unwrap();
    assert_eq!(g.shape, vec![1, 13, 3]);
    assert!(g.data.iter().all(|v| *v == 0.0));
}

#[test]
fn bench_prints_one_json_line_per_shape() {
    let (ok, out, err) = idem(&[
        "--threads",
        "2",
        "bench",
        "target",
        "--json",
        "--repeats",
        "1",
        "--only",
        "dw4",
    ]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["task"], "dw4");
    assert_eq!((v["B"].as_u64(), v["K"].as_u64()), (Some(512), Some(1000)));
    assert!(v["ms"].as_f64().unwrap() > 0.0 && v["pair_terms_per_s"].as_f64().unwrap() > 0.0);
    let (ok, _, err) = idem(&["bench", "target", "--only", "nope"]);
    assert!(!ok && err.contains("no benchmark matches"), "{err}");
    // the reference's figure from a same-session file: speed-up = its ms / ours
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reference.json");
    std::fs::write(
        &file,
        r#"{"reference_ms": {"dw4": {"B": 512, "K": 1000, "ms": 123.5}}}"#,
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (ok, out, err) = idem(&[
        "bench",
        "target",
        "--json",
        "--repeats",
        "1",
        "--only",
        "dw4",
        "--reference",
        file,
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["reference_ms"].as_f64(), Some(123.5));
    let ratio = 123.5 / v["ms"].as_f64().unwrap();
    assert!((v["speedup"].as_f64().unwrap() - ratio).abs() < 1e-9 * ratio);
    // a file without the case's target, or no file, is an error naming what is missing
    let (ok, _, err) = idem(&["bench", "target", "--only", "lj13", "--reference", file]);
    assert!(!ok && err.contains("lack lj13"), "{err}");
    let (ok, _, err) = idem(&["bench", "target", "--reference", "/nonexistent/ref.json"]);
    assert!(
        !ok && err.contains("cannot read the reference timings"),
        "{err}"
    );
    let (ok, out, err) = idem(&[
        "--threads",
        "2",
        "bench",
        "net",
        "--json",
        "--repeats",
        "1",
        "--only",
        "dw4",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["task"].as_str(), v["layers"].as_u64()),
        (Some("dw4"), Some(3))
    );
    assert_eq!(
        (v["B_train"].as_u64(), v["B_sample"].as_u64()),
        (Some(512), Some(1000))
    );
    assert!(v["train_ms"].as_f64().unwrap() > 0.0 && v["sample_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn published_splits_have_finite_energies() {
    let dir = common::data_dir();
    for (file, target) in [("dw4_val.npy", "dw4"), ("lj13_val.npy", "lj13")] {
        let path = dir.join(file);
        if !path.exists() {
            eprintln!(
                "SKIPPED: {} not found (set IDEM_DATA_DIR to the benchmark splits folder)",
                path.display()
            );
            continue;
        }
        let t = idem::Target::by_name(target).unwrap();
        let b = npy::read_batch(&path, t.dim(), t.particles()).unwrap();
        let mut lp = vec![0.0f32; b.n];
        let rep = t.log_prob_batch(&b.data, &mut lp).unwrap();
        assert_eq!(rep.invalid, 0);
        let mean = lp.iter().map(|&v| f64::from(v)).sum::<f64>() / b.n as f64;
        eprintln!("{file}: {} configurations, mean log p {mean:.3}", b.n);
        // MCMC equilibrium samples (measured here): mean log p 22.47 (DW-4), 43.00 (LJ-13, ordered pairs)
        let expect = if target == "dw4" { 22.47 } else { 43.0 };
        assert!(
            (mean - expect).abs() < 0.05 * expect,
            "{file}: mean log p {mean}"
        );
    }
}

#[test]
fn mcmc_command_writes_samples_report_and_trace_and_honours_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.npy");
    let o = out.to_str().unwrap();
    let (ok, _, err) = idem(&[
        "mcmc",
        "--target",
        "dw4",
        "--chains",
        "16",
        "--warmup",
        "50",
        "--steps",
        "100",
        "--thin",
        "10",
        "--kernel",
        "hmc",
        "--leapfrog",
        "5",
        "--init-std",
        "2",
        "--out",
        o,
    ]);
    assert!(ok, "{err}");
    let a = npy::read(&out).unwrap();
    assert_eq!(a.shape, vec![160, 8]);
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    // 16 chains: 100 relaxation steps × 1, warm-up and sampling 150 steps × (5 + 1) evaluations
    let calls = rep["energy_calls"].as_u64().unwrap();
    assert!(
        (16 * (150 * 5 + 100)..=16 * (150 * 6 + 102)).contains(&calls),
        "{calls}"
    );
    assert!(rep["convergence"]["energy_rhat"].as_f64().unwrap() > 0.9);
    assert!(dir.path().join("r.trace.png").exists());
    // a budget below one sampling step's worth stops early and says so
    let (ok, _, err) = idem(&[
        "mcmc", "--target", "dw4", "--chains", "16", "--warmup", "50", "--steps", "100", "--out",
        o, "--budget", "2000",
    ]);
    assert!(!ok && err.contains("budget"), "{err}");
}

#[test]
fn nll_command_reports_likelihood_log_z_and_ess() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    for (name, seed, n) in [("train.npy", "1", "2000"), ("test.npy", "2", "50")] {
        let (ok, _, err) = idem(&[
            "exact",
            "--target",
            "gmm40",
            "-n",
            n,
            "--seed",
            seed,
            "--out",
            &p(name),
        ]);
        assert!(ok, "{err}");
    }
    let (ok, _, err) = idem(&[
        "nll",
        "--target",
        "gmm40",
        "--samples",
        &p("train.npy"),
        "--test",
        &p("test.npy"),
        "--out",
        &p("nll"),
        "--steps",
        "200",
        "--model-samples",
        "100",
    ]);
    assert!(ok, "{err}");
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("nll/report.json")).unwrap()).unwrap();
    for key in ["nll", "nfe", "logz_lower_bound", "logz", "ess"] {
        assert!(rep[key].as_f64().is_some(), "report lacks {key}: {rep}");
    }
    let ess = rep["ess"].as_f64().unwrap();
    assert!(ess > 0.0 && ess <= 1.0);
    // log Z of the normalised GMM is 0: the lower bound may not exceed the estimate
    assert!(rep["logz_lower_bound"].as_f64().unwrap() <= rep["logz"].as_f64().unwrap() + 1e-9);
    // the NLL of a barely trained flow is finite and not below the true value by much
    let nll = rep["nll"].as_f64().unwrap();
    assert!(nll.is_finite() && nll > rep["target_mean_neg_log_p"].as_f64().unwrap() - 0.5);
    assert!(Path::new(&p("nll/cnf.safetensors")).exists());
    // the saved CNF is reusable and gives the same NLL
    let (ok, _, err) = idem(&[
        "nll",
        "--target",
        "gmm40",
        "--samples",
        &p("train.npy"),
        "--test",
        &p("test.npy"),
        "--out",
        &p("nll2"),
        "--cnf",
        &p("nll"),
        "--model-samples",
        "0",
    ]);
    assert!(ok, "{err}");
    let rep2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("nll2/report.json")).unwrap()).unwrap();
    assert!((rep2["nll"].as_f64().unwrap() - nll).abs() < 1e-9);
}
