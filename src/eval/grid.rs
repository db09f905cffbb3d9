//! Exact reference for 2-D targets by quadrature: what a user's low-dimensional energy can be
//! checked against without any sampler.
//!
//! [`GridReference`] evaluates log p at the centres of `cells × cells` equal cells covering a box
//! (the midpoint rule) and normalises: cell masses P_c ∝ exp(log p(centre_c)), Σ P_c = 1 (the
//! box is assumed to hold the mass; `edge_mass` says how much sits in its outermost ring of
//! cells, a sign the box is too small when it is not tiny). From it:
//!
//! * **histogram TV** ([`GridReference::histogram_tv`]): samples binned on a `bins × bins` grid
//!   over the same box (bins must divide cells), TV = ½(Σ_b |n_b/N − P_b| + n_out/N), where P_b
//!   sums the cell masses of bin b and samples outside the box count in full.
//! * **exact samples** ([`GridReference::sample`]): a cell drawn with probability P_c, then a
//!   uniform point in it — the quadrature density, exact to the cell size. Their TV against the
//!   same P is the floor any sampler of N points meets by finite-sample noise alone.
//! * **basins** ([`GridReference::basins`]): every cell follows its steepest uphill neighbour
//!   (8-neighbourhood, larger log p) to a local maximum of the grid; a basin is the set of cells
//!   that reach the same maximum (its mode), its weight their total mass. A sample belongs to the
//!   basin of the cell it falls in. Basins with weight below [`MIN_BASIN_WEIGHT`] (e.g. flat
//!   far-away plateaus) are not reported; samples in them count as `other`.

use rand::RngExt;
use serde::Serialize;

use crate::energy::Target;
use crate::error::{Error, Result};
use crate::rng::stream;

/// Basins lighter than this are not reported one by one (their mass goes to `other`).
pub const MIN_BASIN_WEIGHT: f64 = 1e-4;

/// A basin of attraction of log p on the grid.
#[derive(Clone, Debug, Serialize)]
pub struct Basin {
    /// Centre of the cell with the largest log p in the basin (the mode, to the cell size).
    pub mode: [f64; 2],
    /// log p at the mode.
    pub log_p: f64,
    /// Exact weight: mass of the basin's cells.
    pub weight: f64,
}

/// Comparison of a sample set with the exact grid density ([`GridReference::compare`]).
#[derive(Clone, Debug, Serialize)]
pub struct GridReport {
    pub samples: usize,
    pub bins: usize,
    /// Histogram TV of the samples against the exact bin masses.
    pub tv: f64,
    /// Mean and standard deviation of the same TV for `floor_sets` exact sample sets of the same
    /// size: the finite-sample floor.
    pub tv_floor: f64,
    pub tv_floor_std: f64,
    pub floor_sets: usize,
    /// tv − tv_floor.
    pub tv_excess: f64,
    /// Per basin: exact weight and the samples' fraction.
    pub basins: Vec<BasinWeight>,
    /// Largest |fraction − weight| over basins.
    pub max_basin_error: f64,
    /// Fraction of samples outside the box.
    pub outside: f64,
}

/// One basin's exact weight beside a sample set's fraction.
#[derive(Clone, Debug, Serialize)]
pub struct BasinWeight {
    pub mode: [f64; 2],
    pub weight: f64,
    pub fraction: f64,
}

/// The exact density of a 2-D target on a grid (module docs).
#[derive(Clone, Debug)]
pub struct GridReference {
    lo: [f64; 2],
    hi: [f64; 2],
    cells: usize,
    /// Normalised cell masses, row-major: cell (i, j) = (x index, y index) at i·cells + j.
    mass: Vec<f64>,
    cdf: Vec<f64>,
    /// Index into `basins` per cell (`usize::MAX`: invalid cell or a light basin).
    label: Vec<usize>,
    basins: Vec<Basin>,
    edge_mass: f64,
}

impl GridReference {
    /// Evaluate `target` (2-D, not a particle system) on `cells × cells` cells of the box
    /// [lo₀, hi₀] × [lo₁, hi₁]. Costs cells² energy evaluations (on a clone of the target, so
    /// not counted against a run).
    pub fn new(target: &Target, lo: [f64; 2], hi: [f64; 2], cells: usize) -> Result<Self> {
        if target.dim() != 2 || target.particles().is_some() {
            return Err(Error::Shape(format!(
                "the grid reference is for 2-D targets; {} has {} coordinates",
                target.name(),
                target.dim()
            )));
        }
        if cells < 2 || !(0..2).all(|d| lo[d].is_finite() && hi[d].is_finite() && hi[d] > lo[d]) {
            return Err(Error::Config(format!(
                "grid: need lo < hi (finite) and at least 2 cells, got lo {lo:?}, hi {hi:?}, {cells} cells"
            )));
        }
        let w = [
            (hi[0] - lo[0]) / cells as f64,
            (hi[1] - lo[1]) / cells as f64,
        ];
        let mut x = vec![0.0f64; 2 * cells * cells];
        for i in 0..cells {
            for j in 0..cells {
                let c = i * cells + j;
                x[2 * c] = lo[0] + (i as f64 + 0.5) * w[0];
                x[2 * c + 1] = lo[1] + (j as f64 + 0.5) * w[1];
            }
        }
        let mut lp = vec![0.0f64; cells * cells];
        let mut g = vec![0.0f64; x.len()];
        target
            .clone()
            .log_prob_grad_batch_f64(&x, &mut lp, &mut g)?;
        let max = lp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !max.is_finite() {
            return Err(Error::NonFinite(format!(
                "log p of {} is invalid everywhere on the grid",
                target.name()
            )));
        }
        let mut mass: Vec<f64> = lp.iter().map(|&l| (l - max).exp()).collect();
        let total: f64 = mass.iter().sum();
        mass.iter_mut().for_each(|m| *m /= total);
        let mut cdf = Vec::with_capacity(mass.len());
        let mut acc = 0.0;
        for m in &mass {
            acc += m;
            cdf.push(acc);
        }
        let edge_mass = (0..cells * cells)
            .filter(|&c| {
                let (i, j) = (c / cells, c % cells);
                i == 0 || j == 0 || i + 1 == cells || j + 1 == cells
            })
            .map(|c| mass[c])
            .sum();
        // steepest uphill neighbour of every cell (itself at a local maximum)
        let up: Vec<usize> = (0..cells * cells)
            .map(|c| {
                let (i, j) = ((c / cells) as isize, (c % cells) as isize);
                let mut best = c;
                for di in -1..=1isize {
                    for dj in -1..=1isize {
                        let (a, b) = (i + di, j + dj);
                        if a < 0 || b < 0 || a >= cells as isize || b >= cells as isize {
                            continue;
                        }
                        let n = a as usize * cells + b as usize;
                        if lp[n] > lp[best] {
                            best = n;
                        }
                    }
                }
                best
            })
            .collect();
        // follow to the root with memoisation
        let mut root = vec![usize::MAX; cells * cells];
        let mut path = Vec::new();
        for c in 0..cells * cells {
            let mut k = c;
            while root[k] == usize::MAX && up[k] != k {
                path.push(k);
                k = up[k];
            }
            let r = if up[k] == k { k } else { root[k] };
            root[k] = r;
            for p in path.drain(..) {
                root[p] = r;
            }
        }
        // a maximum on a plateau of equal log p (e.g. a mode between cell centres, mirrored
        // exactly) is one maximum: join a local maximum to the basin of every neighbour with the
        // same log p
        let mut parent: Vec<usize> = (0..cells * cells).collect();
        fn find(parent: &mut [usize], mut a: usize) -> usize {
            while parent[a] != a {
                parent[a] = parent[parent[a]];
                a = parent[a];
            }
            a
        }
        for c in (0..cells * cells).filter(|&c| up[c] == c && lp[c].is_finite()) {
            let (i, j) = ((c / cells) as isize, (c % cells) as isize);
            for (di, dj) in [
                (-1isize, -1isize),
                (-1, 0),
                (-1, 1),
                (0, -1),
                (0, 1),
                (1, -1),
                (1, 0),
                (1, 1),
            ] {
                let (a, b) = (i + di, j + dj);
                if a < 0 || b < 0 || a >= cells as isize || b >= cells as isize {
                    continue;
                }
                let n = a as usize * cells + b as usize;
                if lp[n] == lp[c] {
                    let (ra, rb) = (find(&mut parent, c), find(&mut parent, root[n]));
                    parent[ra.max(rb)] = ra.min(rb);
                }
            }
        }
        for r in root.iter_mut() {
            *r = find(&mut parent, *r);
        }
        let mut weight_of_root = std::collections::BTreeMap::<usize, f64>::new();
        for c in 0..cells * cells {
            if lp[c].is_finite() {
                *weight_of_root.entry(root[c]).or_insert(0.0) += mass[c];
            }
        }
        let mut kept: Vec<(usize, f64)> = weight_of_root
            .into_iter()
            .filter(|&(_, wgt)| wgt >= MIN_BASIN_WEIGHT)
            .collect();
        kept.sort_by(|a, b| b.1.total_cmp(&a.1));
        let index: std::collections::HashMap<usize, usize> =
            kept.iter().enumerate().map(|(k, &(r, _))| (r, k)).collect();
        let label = (0..cells * cells)
            .map(|c| {
                if lp[c].is_finite() {
                    index.get(&root[c]).copied().unwrap_or(usize::MAX)
                } else {
                    usize::MAX
                }
            })
            .collect();
        let basins = kept
            .iter()
            .map(|&(r, wgt)| Basin {
                mode: [x[2 * r], x[2 * r + 1]],
                log_p: lp[r],
                weight: wgt,
            })
            .collect();
        Ok(Self {
            lo,
            hi,
            cells,
            mass,
            cdf,
            label,
            basins,
            edge_mass,
        })
    }

    /// The basins, heaviest first.
    pub fn basins(&self) -> &[Basin] {
        &self.basins
    }
    /// Mass in the outermost ring of cells (module docs).
    pub fn edge_mass(&self) -> f64 {
        self.edge_mass
    }
    /// Cells per axis.
    pub fn cells(&self) -> usize {
        self.cells
    }

    /// The cell of a point, if it lies in the box.
    fn cell_of(&self, p: &[f32]) -> Option<usize> {
        let mut idx = [0usize; 2];
        for d in 0..2 {
            let v = f64::from(p[d]);
            if !(v >= self.lo[d] && v < self.hi[d]) {
                return None;
            }
            let f = (v - self.lo[d]) / (self.hi[d] - self.lo[d]) * self.cells as f64;
            idx[d] = (f as usize).min(self.cells - 1);
        }
        Some(idx[0] * self.cells + idx[1])
    }

    fn check_points(&self, samples: &[f32]) -> Result<usize> {
        if samples.is_empty() || !samples.len().is_multiple_of(2) {
            return Err(Error::Shape(
                "the grid reference needs a non-empty [n, 2] sample set".into(),
            ));
        }
        Ok(samples.len() / 2)
    }

    /// Exact bin masses on a `bins × bins` grid over the box (row-major, x index first).
    pub fn bin_masses(&self, bins: usize) -> Result<Vec<f64>> {
        if bins == 0 || !self.cells.is_multiple_of(bins) {
            return Err(Error::Config(format!(
                "{bins} histogram bins do not divide the grid's {} cells per axis",
                self.cells
            )));
        }
        let f = self.cells / bins;
        let mut out = vec![0.0; bins * bins];
        for (c, m) in self.mass.iter().enumerate() {
            let (i, j) = (c / self.cells / f, c % self.cells / f);
            out[i * bins + j] += m;
        }
        Ok(out)
    }

    /// Histogram TV of `samples` (`[n, 2]`) against the exact bin masses (module docs).
    pub fn histogram_tv(&self, samples: &[f32], bins: usize) -> Result<f64> {
        let n = self.check_points(samples)?;
        let exact = self.bin_masses(bins)?;
        let f = self.cells / bins;
        let mut counts = vec![0u64; bins * bins];
        let mut outside = 0u64;
        for p in samples.chunks_exact(2) {
            match self.cell_of(p) {
                Some(c) => counts[(c / self.cells / f) * bins + c % self.cells / f] += 1,
                None => outside += 1,
            }
        }
        let nf = n as f64;
        let sum: f64 = counts
            .iter()
            .zip(&exact)
            .map(|(&k, &p)| (k as f64 / nf - p).abs())
            .sum();
        Ok((0.5 * (sum + outside as f64 / nf)).min(1.0))
    }

    /// `n` exact samples of the grid density (module docs), `[n, 2]`, from stream `seed`.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        let mut rng = stream(seed, 0x6_71D);
        let w = [
            (self.hi[0] - self.lo[0]) / self.cells as f64,
            (self.hi[1] - self.lo[1]) / self.cells as f64,
        ];
        let total = *self.cdf.last().expect("cells > 0");
        let mut out = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let u: f64 = rng.random::<f64>() * total;
            let c = self
                .cdf
                .partition_point(|&v| v <= u)
                .min(self.mass.len() - 1);
            let (i, j) = (c / self.cells, c % self.cells);
            let (a, b): (f64, f64) = (rng.random(), rng.random());
            out.push((self.lo[0] + (i as f64 + a) * w[0]) as f32);
            out.push((self.lo[1] + (j as f64 + b) * w[1]) as f32);
        }
        out
    }

    /// Fraction of `samples` in each basin (order of [`GridReference::basins`]), and the
    /// fraction outside the box or in no reported basin.
    pub fn basin_fractions(&self, samples: &[f32]) -> Result<(Vec<f64>, f64)> {
        let n = self.check_points(samples)?;
        let mut counts = vec![0u64; self.basins.len()];
        let mut other = 0u64;
        for p in samples.chunks_exact(2) {
            match self.cell_of(p).map(|c| self.label[c]) {
                Some(l) if l != usize::MAX => counts[l] += 1,
                _ => other += 1,
            }
        }
        Ok((
            counts.iter().map(|&k| k as f64 / n as f64).collect(),
            other as f64 / n as f64,
        ))
    }

    /// Compare `samples` with the exact density: histogram TV on `bins × bins`, its floor over
    /// `floor_sets` exact sample sets of the same size (streams from `seed`), basin weights.
    pub fn compare(
        &self,
        samples: &[f32],
        bins: usize,
        floor_sets: usize,
        seed: u64,
    ) -> Result<GridReport> {
        let n = self.check_points(samples)?;
        let tv = self.histogram_tv(samples, bins)?;
        let floors: Vec<f64> = (0..floor_sets.max(1))
            .map(|k| self.histogram_tv(&self.sample(n, crate::rng::mix64(seed ^ k as u64)), bins))
            .collect::<Result<_>>()?;
        let fm = floors.iter().sum::<f64>() / floors.len() as f64;
        let fs =
            (floors.iter().map(|v| (v - fm) * (v - fm)).sum::<f64>() / floors.len() as f64).sqrt();
        let (fractions, _) = self.basin_fractions(samples)?;
        let basins: Vec<BasinWeight> = self
            .basins
            .iter()
            .zip(&fractions)
            .map(|(b, &f)| BasinWeight {
                mode: b.mode,
                weight: b.weight,
                fraction: f,
            })
            .collect();
        let max_basin_error = basins
            .iter()
            .map(|b| (b.fraction - b.weight).abs())
            .fold(0.0, f64::max);
        let outside = samples
            .chunks_exact(2)
            .filter(|p| self.cell_of(p).is_none())
            .count() as f64
            / n as f64;
        Ok(GridReport {
            samples: n,
            bins,
            tv,
            tv_floor: fm,
            tv_floor_std: fs,
            floor_sets: floors.len(),
            tv_excess: tv - fm,
            basins,
            max_basin_error,
            outside,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::Gmm;

    #[test]
    fn two_gaussians_have_their_weights_and_exact_samples_meet_the_floor() {
        // weights 0.7 / 0.3 at ±2, σ = 0.4: basins split at the density's saddle near 0
        let g = Gmm::new(
            "two",
            &[0.7, 0.3],
            &[-2.0, 0.0, 2.0, 0.0],
            &[0.4, 0.4, 0.4, 0.4],
        )
        .unwrap();
        let t = Target::new(g);
        let grid = GridReference::new(&t, [-5.0, -3.0], [5.0, 3.0], 400).unwrap();
        let b = grid.basins();
        assert_eq!(b.len(), 2, "{b:?}");
        assert!((b[0].weight - 0.7).abs() < 1e-4, "{:?}", b);
        assert!((b[1].weight - 0.3).abs() < 1e-4, "{:?}", b);
        assert!((b[0].mode[0] + 2.0).abs() < 0.03 && b[0].mode[1].abs() < 0.03);
        assert!(grid.edge_mass() < 1e-12);
        let s = grid.sample(20_000, 1);
        let r = grid.compare(&s, 40, 4, 9).unwrap();
        assert!(r.max_basin_error < 0.015, "{r:?}");
        assert!(r.tv_excess.abs() < 4.0 * r.tv_floor_std.max(0.003), "{r:?}");
        // a sampler that misses the light mode is far off
        let heavy: Vec<f32> = s
            .chunks(2)
            .filter(|p| p[0] < 0.0)
            .flatten()
            .copied()
            .collect();
        let bad = grid.compare(&heavy, 40, 2, 9).unwrap();
        assert!(bad.max_basin_error > 0.25 && bad.tv > 0.25, "{bad:?}");
        // points outside the box count fully
        let out = vec![100.0f32; 20];
        assert_eq!(grid.histogram_tv(&out, 40).unwrap(), 1.0);
        assert!(grid.bin_masses(33).is_err());
        assert!(
            GridReference::new(&Target::by_name("dw4").unwrap(), [0.0; 2], [1.0; 2], 10).is_err()
        );
    }
}
