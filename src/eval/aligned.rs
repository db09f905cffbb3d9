//! Alignment-invariant distances between particle configurations.
//!
//! The aligned distance between configurations A and B (`[n, d]`, each centred on its mean) is
//!
//! ```text
//! D(A, B)² = min over permutations P and orthogonal Q (rotations and reflections) of |P·A·Q − B|²
//! ```
//!
//! with |·| the Euclidean norm of all n·d coordinates — the same units as the raw W2 on flattened
//! coordinates (D = √n · RMSD). The joint minimum is found by alternating the two exact partial
//! minimisations until the permutation stops changing (each step cannot increase the cost):
//! the best permutation for fixed Q (an exact assignment, Jonker–Volgenant, [`super::assignment`];
//! steps after the first start from the previous step's prices) and the best Q for a fixed
//! permutation (Kabsch without the determinant correction, so reflections are allowed:
//! Q = U·Vᵀ from the SVD U·Σ·Vᵀ of Aᵀ·P·B, `nalgebra`). To avoid poor local minima it starts
//! from 2^d orientations — A's principal axes mapped onto B's with every choice of signs — and
//! keeps the smallest.
//!
//! The aligned W2 between two sample sets is then the exact optimal transport (assignment)
//! W2 with this D² as the cost, square root taken.
//!
//! **How good the minimum is.** Every value is a local minimum, so D is an upper bound on the
//! true minimum; for DW-4 and LJ-13 the starts mostly agree. At 55 particles the cluster is nearly
//! spherical, its principal axes are arbitrary, and the 8 starts land in different local minima
//! (on LJ-55 validation pairs D² spans about 13.5–22 across the starts of one pair; the minimum
//! is kept). Treat LJ-55 aligned W2 as comparable between sample sets evaluated with this code,
//! not as the exact aligned distance. Aligning every configuration to a common template first
//! and starting from the composed orientation was tried and is worse (mean D² 18.0 against 16.0
//! on 40 pairs).
//!
//! **Cost.** 8 starts × ~3 assignments of 55 × 55 per LJ-55 pair (~25 solves, ~100 row scans
//! each), 10⁶ pairs for 1000 vs 1000 sets, on all threads. About 0.15 ms per pair on one core of
//! the 2026 Zen 5 machines (0.35 ms before the changes below). What keeps it there, none of which
//! changes a value: each configuration is centred, transposed and given its principal axes once
//! ([`Prepared`]), not once per pair; the solver's row scans run in AVX-512 ([`super::assignment`]);
//! the costs are checked for finiteness by their sum, which the cost loop computes anyway, instead
//! of value by value; and a start whose assignment reaches one an earlier start of the same pair
//! passed through stops there (from an assignment on, a descent is a function of that assignment
//! alone, so it would end where the earlier one ended).

use nalgebra::{DMatrix, SymmetricEigen};
use rayon::prelude::*;

use super::assignment::Assignment;
use crate::energy::ParticleShape;
use crate::error::Result;

/// Alternations per start before giving up on convergence (rarely more than 4 are needed).
const MAX_ITERS: usize = 50;

/// One configuration ready for alignment: centred on its mean (f64, `[n, d]` row-major), a
/// coordinate-major copy (`[d, n]`, so the particle-cost loop runs over contiguous particles and
/// vectorises) and its principal axes. Prepared once per configuration, not once per pair.
#[derive(Debug, Clone)]
pub struct Prepared {
    x: Vec<f64>,
    x_t: Vec<f64>,
    axes: DMatrix<f64>,
}

impl Prepared {
    /// `x` (`[n·d]`) for `shape`.
    pub fn new(x: &[f32], shape: ParticleShape) -> Self {
        let (n, d) = (shape.n_particles, shape.spatial_dim);
        let mut c: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        for k in 0..d {
            let mean = (0..n).map(|i| c[i * d + k]).sum::<f64>() / n as f64;
            (0..n).for_each(|i| c[i * d + k] -= mean);
        }
        let x_t = (0..d)
            .flat_map(|k| (0..n).map(move |i| (i, k)))
            .map(|(i, k)| c[i * d + k])
            .collect();
        let axes = principal_axes(&c, n, d);
        Self { x: c, x_t, axes }
    }

    /// Every configuration of `x` (`[m, n·d]`), on all threads; `what` names the metric in the
    /// error for a length that is not a whole number of configurations.
    pub fn all(x: &[f32], shape: ParticleShape, what: &str) -> Result<Vec<Self>> {
        if !x.len().is_multiple_of(shape.dim()) {
            return Err(crate::error::Error::Shape(format!(
                "{what} needs whole configurations of {} values",
                shape.dim()
            )));
        }
        Ok(x.par_chunks_exact(shape.dim())
            .map(|c| Self::new(c, shape))
            .collect())
    }
}

/// Principal axes (columns, eigenvectors of the gyration tensor XᵀX, sorted by eigenvalue).
fn principal_axes(x: &[f64], n: usize, d: usize) -> DMatrix<f64> {
    let g = DMatrix::<f64>::from_fn(d, d, |r, c| {
        (0..n).map(|i| x[i * d + r] * x[i * d + c]).sum()
    });
    let eig = SymmetricEigen::new(g);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    DMatrix::from_fn(d, d, |r, c| eig.eigenvectors[(r, order[c])])
}

/// The best orthogonal Q (reflections allowed: Q = U·Vᵀ from the SVD of Aᵀ·P·B, no determinant
/// correction) with a_i·Q ≈ b_{perm[i]}; `a`, `b` are `[n, d]` row-major.
fn kabsch(a: &[f64], b: &[f64], perm: &[usize], d: usize) -> DMatrix<f64> {
    let mut m = DMatrix::<f64>::zeros(d, d);
    for (i, &j) in perm.iter().enumerate() {
        let (ai, bj) = (&a[i * d..(i + 1) * d], &b[j * d..(j + 1) * d]);
        for r in 0..d {
            for c in 0..d {
                m[(r, c)] += ai[r] * bj[c];
            }
        }
    }
    let svd = m.svd(true, true);
    match (svd.u, svd.v_t) {
        (Some(u), Some(v_t)) => u * v_t,
        _ => DMatrix::identity(d, d),
    }
}

/// Squared (or, with `root`, plain) Euclidean distances between the particles of `x` (`[n, d]`)
/// and those of y, given coordinate-major as `y_t` (`[d, n]`, so the inner loop runs over
/// contiguous particles and vectorises), into the n×n `cost`. Returns the sum of the costs:
/// finite exactly when every cost is (they are ≥ 0).
fn particle_costs(
    x: &[f64],
    y_t: &[f64],
    n: usize,
    d: usize,
    root: bool,
    cost: &mut Vec<f64>,
) -> f64 {
    // every entry is written below (the general path adds to zeros)
    cost.resize(n * n, 0.0);
    if d != 3 {
        cost.fill(0.0);
    }
    crate::multiversion!((x: &[f64], y_t: &[f64], n: usize, d: usize, root: bool, cost: &mut [f64]) -> f64 {
        let mut total = 0.0;
        for (xi, row) in x.chunks_exact(d).zip(cost.chunks_exact_mut(n)) {
            if let [x0, x1, x2] = xi {
                // three dimensions in one pass over the row
                let (y0, y12) = y_t.split_at(n);
                let (y1, y2) = y12.split_at(n);
                for (((c, &a), &b), &e) in row.iter_mut().zip(y0).zip(y1).zip(y2) {
                    let (t0, t1, t2) = (x0 - a, x1 - b, x2 - e);
                    *c = t0 * t0 + t1 * t1 + t2 * t2;
                }
            } else {
                for (&xk, yk) in xi.iter().zip(y_t.chunks_exact(n)) {
                    for (c, &y) in row.iter_mut().zip(yk) {
                        let t = xk - y;
                        *c += t * t;
                    }
                }
            }
            if root {
                row.iter_mut().for_each(|c| *c = c.sqrt());
            }
            total += crate::simd::sum(row);
        }
        total
    })
}

/// Workspace of the alignment-based distances: one per thread, reused across pairs (a pair then
/// allocates only the d×d matrices of its starts).
#[derive(Debug, Default, Clone)]
pub struct Aligner {
    rotated: Vec<f64>,
    cost: Vec<f64>,
    /// the assignment just solved
    next: Vec<usize>,
    /// the assignment of the current alignment step
    step_perm: Vec<usize>,
    /// every assignment the earlier starts of this pair passed through, n entries each
    visited: Vec<usize>,
    /// the assignments of the current start
    trail: Vec<usize>,
    solver: Assignment,
}

impl Aligner {
    pub fn new() -> Self {
        Self::default()
    }

    /// `a`·Q into `self.rotated`.
    fn rotate(&mut self, a: &[f64], q: &DMatrix<f64>, d: usize) {
        self.rotated.resize(a.len(), 0.0);
        // q is column-major: column c is q[c·d..(c + 1)·d]
        let q = q.as_slice();
        for (ai, out) in a.chunks_exact(d).zip(self.rotated.chunks_exact_mut(d)) {
            for (o, qc) in out.iter_mut().zip(q.chunks_exact(d)) {
                let mut t = 0.0;
                for (&x, &w) in ai.iter().zip(qc) {
                    t += x * w;
                }
                *o = t;
            }
        }
    }

    /// Σ_i |a_i·Q − b_{perm[i]}|² for the current `rotated` = a·Q.
    fn assigned_cost(&self, b: &[f64], perm: &[usize], d: usize) -> f64 {
        perm.iter()
            .enumerate()
            .map(|(i, &j)| {
                let (p, q) = (&self.rotated[i * d..(i + 1) * d], &b[j * d..(j + 1) * d]);
                p.iter().zip(q).map(|(x, y)| (x - y) * (x - y)).sum::<f64>()
            })
            .sum()
    }

    /// The best assignment of b's particles to the rows of `rotated` (squared or plain costs)
    /// into `self.next`; `warm`: start from the solver's prices of the previous step.
    fn assign(&mut self, b: &Prepared, n: usize, d: usize, root: bool, warm: bool) {
        let total = particle_costs(&self.rotated, &b.x_t, n, d, root, &mut self.cost);
        self.next.clear();
        if total.is_finite() {
            let p = self.solver.solve_checked(n, &self.cost, warm);
            self.next.extend_from_slice(p);
        } else {
            // finite inputs give finite costs; keep the identity if they ever do not
            self.next.extend(0..n);
        }
    }

    /// Whether an earlier start of this pair passed through the assignment `self.next`.
    fn seen_before(&self, n: usize) -> bool {
        self.visited
            .chunks_exact(n)
            .any(|p| p == self.next.as_slice())
    }

    /// Alternate the two exact partial minimisations from the orientation `q` of `a` onto `b`
    /// until the assignment is stable: the local minimum of the cost. A start that reaches an
    /// assignment an earlier start of the pair passed through would retrace that start's steps
    /// (each step is a function of the assignment alone) to the minimum already found: it stops
    /// there and returns +∞, which leaves the pair's minimum unchanged.
    fn descend(
        &mut self,
        a: &Prepared,
        b: &Prepared,
        mut q: DMatrix<f64>,
        n: usize,
        d: usize,
    ) -> f64 {
        let mut perm = std::mem::take(&mut self.step_perm);
        perm.clear();
        self.trail.clear();
        let mut c = f64::INFINITY;
        for step in 0..MAX_ITERS {
            self.rotate(&a.x, &q, d);
            self.assign(b, n, d, false, step > 0);
            if self.next == perm {
                break;
            }
            if self.seen_before(n) {
                c = f64::INFINITY;
                break;
            }
            perm.clone_from(&self.next);
            self.trail.extend_from_slice(&perm);
            q = kabsch(&a.x, &b.x, &perm, d);
            self.rotate(&a.x, &q, d);
            c = self.assigned_cost(&b.x, &perm, d);
        }
        self.visited.extend_from_slice(&self.trail);
        self.step_perm = perm;
        c
    }

    /// D(A, B)² of the module docs for two prepared configurations.
    pub fn aligned_sq_prepared(&mut self, a: &Prepared, b: &Prepared, shape: ParticleShape) -> f64 {
        let (n, d) = (shape.n_particles, shape.spatial_dim);
        self.visited.clear();
        let mut best = f64::INFINITY;
        for signs in 0..(1usize << d) {
            // a's principal axes onto b's, with the signs of `signs`
            let s = DMatrix::from_fn(d, d, |r, c| {
                if r != c {
                    0.0
                } else if signs >> r & 1 == 1 {
                    -1.0
                } else {
                    1.0
                }
            });
            let q = &a.axes * s * b.axes.transpose();
            best = best.min(self.descend(a, b, q, n, d));
        }
        best.max(0.0)
    }

    /// D(A, B)² of the module docs for two configurations (flattened `[n·d]`).
    pub fn aligned_sq_distance(&mut self, a: &[f32], b: &[f32], shape: ParticleShape) -> f64 {
        self.aligned_sq_prepared(&Prepared::new(a, shape), &Prepared::new(b, shape), shape)
    }

    /// The geometric distance² of the adjoint-sampling protocol ([`super::geometric`]) for two
    /// prepared configurations: one assignment on unsquared particle distances of the unrotated,
    /// centred positions, then one Kabsch step.
    pub fn geometric_sq_prepared(
        &mut self,
        x: &Prepared,
        y: &Prepared,
        shape: ParticleShape,
    ) -> f64 {
        let (n, d) = (shape.n_particles, shape.spatial_dim);
        self.rotated.clone_from(&x.x);
        // next[i] = the particle of y matched to particle i of x
        self.assign(y, n, d, true, false);
        let q = kabsch(&x.x, &y.x, &self.next, d);
        self.rotate(&x.x, &q, d);
        self.assigned_cost(&y.x, &self.next, d).max(0.0)
    }

    /// As [`Aligner::geometric_sq_prepared`] for two configurations (flattened `[n·d]`).
    pub fn geometric_sq_distance(&mut self, x: &[f32], y: &[f32], shape: ParticleShape) -> f64 {
        self.geometric_sq_prepared(&Prepared::new(x, shape), &Prepared::new(y, shape), shape)
    }
}

/// D(A, B)² for two configurations (flattened `[n·d]`), see the module docs.
pub fn aligned_sq_distance(a: &[f32], b: &[f32], shape: ParticleShape) -> f64 {
    Aligner::new().aligned_sq_distance(a, b, shape)
}

/// The aligned W2 between two equal-size sets of configurations (`[m, n·d]` each): exact OT with
/// cost D², square root taken (see the module docs). Pairwise costs run on all threads.
pub fn aligned_w2(a: &[f32], b: &[f32], shape: ParticleShape) -> Result<f64> {
    let what = "aligned W2";
    let (pa, pb) = (
        Prepared::all(a, shape, what)?,
        Prepared::all(b, shape, what)?,
    );
    super::ot::w2_with_cost(&pa, &pb, what, |w: &mut Aligner, x, y| {
        w.aligned_sq_prepared(x, y, shape)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn centred(x: &[f32], n: usize, d: usize) -> DMatrix<f64> {
        let mut m = DMatrix::from_fn(n, d, |i, k| f64::from(x[i * d + k]));
        for k in 0..d {
            let mean = m.column(k).mean();
            m.column_mut(k).add_scalar_mut(-mean);
        }
        m
    }

    use crate::rng::NormalStream;

    fn transform(x: &[f32], n: usize, d: usize, seed: u64) -> Vec<f32> {
        // random orthogonal matrix (QR of a Gaussian matrix), shift and permutation
        let mut g = vec![0.0f32; d * d + d];
        NormalStream::new(seed, 0).fill(&mut g);
        let q = DMatrix::from_fn(d, d, |r, c| f64::from(g[r * d + c]))
            .qr()
            .q();
        let perm: Vec<usize> = (0..n).map(|i| (i * 7 + 3) % n).collect();
        let mut out = vec![0.0f32; n * d];
        for i in 0..n {
            for k in 0..d {
                let v: f64 = (0..d)
                    .map(|l| f64::from(x[perm[i] * d + l]) * q[(l, k)])
                    .sum();
                out[i * d + k] = (v + f64::from(g[d * d + k])) as f32;
            }
        }
        out
    }

    #[test]
    fn aligned_distance_vanishes_under_rotation_reflection_translation_permutation() {
        for (n, d) in [(4, 2), (13, 3)] {
            let shape = ParticleShape {
                n_particles: n,
                spatial_dim: d,
            };
            let mut x = vec![0.0f32; n * d];
            NormalStream::new(5, 0).fill(&mut x);
            x.iter_mut().for_each(|v| *v *= 2.0);
            for seed in 0..5 {
                let y = transform(&x, n, d, seed);
                let dist = aligned_sq_distance(&x, &y, shape);
                assert!(dist < 1e-8, "n={n} d={d} seed={seed}: {dist}");
            }
            // a different configuration is at a positive distance, no larger than the raw one
            let mut z = vec![0.0f32; n * d];
            NormalStream::new(6, 0).fill(&mut z);
            let dz = aligned_sq_distance(&x, &z, shape);
            let xc = centred(&x, n, d);
            let zc = centred(&z, n, d);
            let raw = (xc - zc).norm_squared();
            assert!(dz > 1e-3 && dz <= raw + 1e-9, "{dz} vs raw {raw}");
            // symmetric up to the local search
            let back = aligned_sq_distance(&z, &x, shape);
            assert!((back - dz).abs() < 1e-6 * raw.max(1.0), "{back} vs {dz}");
        }
    }

    #[test]
    fn aligned_w2_is_zero_between_transformed_copies_and_at_most_raw_w2() {
        let shape = ParticleShape {
            n_particles: 4,
            spatial_dim: 2,
        };
        let mut a = vec![0.0f32; 20 * 8];
        NormalStream::new(1, 0).fill(&mut a);
        crate::energy::particles::remove_mean(&mut a, shape);
        let b: Vec<f32> = a
            .chunks(8)
            .enumerate()
            .flat_map(|(i, c)| transform(c, 4, 2, i as u64))
            .collect();
        assert!(aligned_w2(&a, &b, shape).unwrap() < 1e-4);
        let mut c = vec![0.0f32; 20 * 8];
        NormalStream::new(2, 0).fill(&mut c);
        crate::energy::particles::remove_mean(&mut c, shape);
        let aw = aligned_w2(&a, &c, shape).unwrap();
        let raw = super::super::ot::w2_exact(&a, &c, 8).unwrap();
        assert!(aw > 0.0 && aw <= raw + 1e-9, "{aw} vs {raw}");
    }
}
