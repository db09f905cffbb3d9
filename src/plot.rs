//! PNG plots of a run (plotters, bitmap backend): the log-density of 2-D targets with samples on
//! top, and histograms of energies and interatomic distances, samples vs reference.

use std::path::Path;

use plotters::prelude::*;

use crate::energy::particles::interatomic_distances;
use crate::energy::{ParticleShape, Target};
use crate::error::{Error, Result};

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        msg: format!("cannot draw plot: {e}"),
    }
}

/// Every plot that fits the target, into folder `dir`: `samples.png` (2-D non-particle targets),
/// `energy_hist.png`, and `distance_hist.png` (particle targets). Returns the files written.
pub fn sample_plots(
    dir: &Path,
    target: &Target,
    samples: &[f32],
    reference: &[f32],
    title: &str,
) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| plot_err(dir, e))?;
    let mut out = Vec::new();
    if target.dim() == 2 && target.particles().is_none() {
        let p = dir.join("samples.png");
        density_with_samples(&p, target, samples, reference, title)?;
        out.push(p);
    }
    let p = dir.join("energy_hist.png");
    energy_histogram(&p, target, samples, reference, title)?;
    out.push(p);
    if let Some(shape) = target.particles() {
        let p = dir.join("distance_hist.png");
        distance_histogram(&p, shape, samples, reference, title)?;
        out.push(p);
    }
    Ok(out)
}

/// log p of a 2-D target as a heat map over the square covering `samples` and `reference`,
/// with the samples as dots. `path` gets a PNG.
pub fn density_with_samples(
    path: &Path,
    target: &Target,
    samples: &[f32],
    reference: &[f32],
    title: &str,
) -> Result<()> {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in samples.iter().chain(reference) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let pad = 0.05 * (hi - lo).max(1e-3);
    let (lo, hi) = (f64::from(lo - pad), f64::from(hi + pad));
    let grid = 200usize;
    let step = (hi - lo) / grid as f64;
    let mut pts = Vec::with_capacity(grid * grid * 2);
    for i in 0..grid {
        for j in 0..grid {
            pts.push((lo + (i as f64 + 0.5) * step) as f32);
            pts.push((lo + (j as f64 + 0.5) * step) as f32);
        }
    }
    let mut lp = vec![0.0f32; grid * grid];
    target.clone().log_prob_batch(&pts, &mut lp)?;
    let max = lp.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let floor = max - 60.0; // colour range: 60 nats below the maximum
    let root = BitMapBackend::new(path, (800, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(lo..hi, lo..hi)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .draw()
        .map_err(|e| plot_err(path, e))?;
    chart
        .draw_series(pts.chunks(2).zip(&lp).map(|(p, &l)| {
            let u = ((l.max(floor) - floor) / (max - floor)).clamp(0.0, 1.0) as f64;
            let c = ViridisRGB::get_color(u as f32);
            let (x, y) = (f64::from(p[0]), f64::from(p[1]));
            Rectangle::new(
                [
                    (x - step / 2.0, y - step / 2.0),
                    (x + step / 2.0, y + step / 2.0),
                ],
                c.filled(),
            )
        }))
        .map_err(|e| plot_err(path, e))?;
    chart
        .draw_series(
            samples
                .chunks(2)
                .map(|p| Circle::new((f64::from(p[0]), f64::from(p[1])), 2, RED.filled())),
        )
        .map_err(|e| plot_err(path, e))?
        .label("samples")
        .legend(|(x, y)| Circle::new((x, y), 3, RED.filled()));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))
}

/// Energy histograms (E = −log p) of samples and reference, density-normalised, over the
/// reference's 0.5–99.5% range widened by 10%; values outside are counted in the title.
pub fn energy_histogram(
    path: &Path,
    target: &Target,
    samples: &[f32],
    reference: &[f32],
    title: &str,
) -> Result<()> {
    let energies = |x: &[f32]| -> Result<Vec<f64>> {
        let mut lp = vec![0.0f32; x.len() / target.dim()];
        target.clone().log_prob_batch(x, &mut lp)?;
        Ok(lp.iter().map(|v| -f64::from(*v)).collect())
    };
    let (es, er) = (energies(samples)?, energies(reference)?);
    histogram_pair(path, &es, &er, "energy E = -log p", title)
}

/// Histograms of all interatomic distances |x_i − x_j| (i < j) of samples and reference.
pub fn distance_histogram(
    path: &Path,
    shape: ParticleShape,
    samples: &[f32],
    reference: &[f32],
    title: &str,
) -> Result<()> {
    let dist = |x: &[f32]| -> Result<Vec<f64>> {
        Ok(interatomic_distances(x, shape)?
            .into_iter()
            .map(f64::from)
            .collect())
    };
    histogram_pair(
        path,
        &dist(samples)?,
        &dist(reference)?,
        "interatomic distance",
        title,
    )
}

/// Two density-normalised histograms (60 bins) over the reference's 0.5–99.5% range widened by
/// 10%; values outside the range (and non-finite ones) are counted in the title.
fn histogram_pair(path: &Path, es: &[f64], er: &[f64], xlabel: &str, title: &str) -> Result<()> {
    let mut sorted: Vec<f64> = er.iter().cloned().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return Err(plot_err(path, "reference has no finite value"));
    }
    let q = |f: f64| sorted[((sorted.len() - 1) as f64 * f) as usize];
    let (a, b) = (q(0.005), q(0.995));
    let w = (b - a).max(1e-6);
    let (lo, hi) = (a - 0.1 * w, b + 0.1 * w);
    let bins = 60usize;
    let width = (hi - lo) / bins as f64;
    let hist = |e: &[f64]| {
        let mut h = vec![0.0f64; bins];
        let mut out = 0usize;
        for &v in e {
            let k = if v.is_finite() {
                ((v - lo) / width).floor()
            } else {
                f64::INFINITY
            };
            if !(0.0..bins as f64).contains(&k) {
                out += 1;
            }
            h[k.clamp(0.0, (bins - 1) as f64) as usize] += 1.0 / (e.len() as f64 * width);
        }
        (h, out)
    };
    let ((hs, out_s), (hr, out_r)) = (hist(es), hist(er));
    let top = hs.iter().chain(&hr).cloned().fold(0.0, f64::max) * 1.1;
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let caption = format!("{title} (outside range: samples {out_s}, reference {out_r})");
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(lo..hi, 0.0..top.max(1e-12))
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(xlabel)
        .y_desc("density")
        .draw()
        .map_err(|e| plot_err(path, e))?;
    for (h, color, name) in [(&hr, BLUE, "reference"), (&hs, RED, "samples")] {
        let pts: Vec<(f64, f64)> = h
            .iter()
            .enumerate()
            .flat_map(|(k, &v)| [(lo + k as f64 * width, v), (lo + (k + 1) as f64 * width, v)])
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| plot_err(path, e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))
}

/// Energy traces of MCMC chains: one line per chain against the step (every step, warm-up
/// included, thinned to at most 2000 points per line), a vertical line at the end of warm-up.
/// The y-range is the 1–99% range of the post-warm-up energies widened by 20% (warm-up
/// transients above it are cut).
pub fn energy_trace(path: &Path, traces: &[Vec<f64>], warmup: usize, title: &str) -> Result<()> {
    let len = traces.iter().map(Vec::len).max().unwrap_or(0);
    if len == 0 {
        return Err(plot_err(path, "no trace to plot"));
    }
    let mut after: Vec<f64> = traces
        .iter()
        .flat_map(|t| t.iter().skip(warmup.min(t.len().saturating_sub(1))))
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    if after.is_empty() {
        return Err(plot_err(path, "no finite energy to plot"));
    }
    after.sort_by(f64::total_cmp);
    let q = |f: f64| after[((after.len() - 1) as f64 * f) as usize];
    let (a, b) = (q(0.01), q(0.99));
    let w = (b - a).max(1e-6);
    let (lo, hi) = (a - 0.2 * w, b + 0.2 * w);
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..len as f64, lo..hi)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("energy E = -log p")
        .draw()
        .map_err(|e| plot_err(path, e))?;
    let stride = len.div_ceil(2000).max(1);
    for (c, t) in traces.iter().enumerate() {
        let color = Palette99::pick(c).to_rgba();
        let pts: Vec<(f64, f64)> = t
            .iter()
            .enumerate()
            .step_by(stride)
            .map(|(i, &e)| (i as f64, e.clamp(lo, hi)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(1)))
            .map_err(|e| plot_err(path, e))?;
    }
    if warmup > 0 && warmup < len {
        chart
            .draw_series(LineSeries::new(
                [(warmup as f64, lo), (warmup as f64, hi)],
                BLACK.stroke_width(2),
            ))
            .map_err(|e| plot_err(path, e))?
            .label("end of warm-up")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_err(path, e))?;
    }
    root.present().map_err(|e| plot_err(path, e))
}
