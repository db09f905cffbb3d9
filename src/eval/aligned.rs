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
//! the best permutation for fixed Q (Hungarian, `lsap`) and the best Q for a fixed permutation
//! (Kabsch without the determinant correction, so reflections are allowed: Q = U·Vᵀ from the SVD
//! U·Σ·Vᵀ of Aᵀ·P·B, `nalgebra`). To avoid poor local minima it starts from 2^d orientations —
//! A's principal axes mapped onto B's with every choice of signs — and keeps the smallest.
//!
//! The aligned W2 between two sample sets is then the exact optimal transport (assignment)
//! W2 with this D² as the cost, square root taken.

use nalgebra::{DMatrix, SymmetricEigen};

use crate::energy::ParticleShape;
use crate::error::Result;

/// Alternations per start before giving up on convergence (rarely more than 4 are needed).
const MAX_ITERS: usize = 50;

pub(crate) fn centred(x: &[f32], n: usize, d: usize) -> DMatrix<f64> {
    let mut m = DMatrix::from_fn(n, d, |i, k| f64::from(x[i * d + k]));
    for k in 0..d {
        let mean = m.column(k).mean();
        m.column_mut(k).add_scalar_mut(-mean);
    }
    m
}

/// Principal axes (columns, eigenvectors of the gyration tensor XᵀX, sorted by eigenvalue).
fn principal_axes(x: &DMatrix<f64>) -> DMatrix<f64> {
    let d = x.ncols();
    let eig = SymmetricEigen::new(x.transpose() * x);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    DMatrix::from_fn(d, d, |r, c| eig.eigenvectors[(r, order[c])])
}

/// Squared distance |A − B|² between rows of a and b for the assignment a_i → b_{perm[i]}.
fn cost_of(a: &DMatrix<f64>, b: &DMatrix<f64>, perm: &[usize]) -> f64 {
    perm.iter()
        .enumerate()
        .map(|(i, &j)| (a.row(i) - b.row(j)).norm_squared())
        .sum()
}

fn best_permutation(a: &DMatrix<f64>, b: &DMatrix<f64>, cost: &mut Vec<f64>) -> Vec<usize> {
    let n = a.nrows();
    for i in 0..n {
        for j in 0..n {
            cost[i * n + j] = (a.row(i) - b.row(j)).norm_squared();
        }
    }
    assignment(n, cost)
}

/// The optimal assignment of an n×n cost matrix (row-major) as `perm[row] = column` (`lsap`,
/// which takes a `&Vec`).
#[allow(clippy::ptr_arg)]
pub(crate) fn assignment(n: usize, cost: &Vec<f64>) -> Vec<usize> {
    match lsap::solve(n, n, cost, false) {
        Ok((rows, cols)) => {
            let mut perm = vec![0; n];
            for (r, c) in rows.into_iter().zip(cols) {
                perm[r] = c;
            }
            perm
        }
        // finite costs always have an assignment; keep the identity if the solver refuses
        Err(_) => (0..n).collect(),
    }
}

/// The best orthogonal Q (reflections allowed) mapping rows of `a` onto `b[perm]`.
pub(crate) fn kabsch(a: &DMatrix<f64>, b: &DMatrix<f64>, perm: &[usize]) -> DMatrix<f64> {
    let d = a.ncols();
    let mut m = DMatrix::zeros(d, d);
    for (i, &j) in perm.iter().enumerate() {
        m += a.row(i).transpose() * b.row(j);
    }
    let svd = m.svd(true, true);
    match (svd.u, svd.v_t) {
        (Some(u), Some(v_t)) => u * v_t,
        _ => DMatrix::identity(d, d),
    }
}

/// D(A, B)² for two configurations (flattened `[n·d]`), see the module docs.
pub fn aligned_sq_distance(a: &[f32], b: &[f32], shape: ParticleShape) -> f64 {
    let (n, d) = (shape.n_particles, shape.spatial_dim);
    let am = centred(a, n, d);
    let bm = centred(b, n, d);
    let (pa, pb) = (principal_axes(&am), principal_axes(&bm));
    let mut cost = vec![0.0; n * n];
    let mut best = f64::INFINITY;
    for signs in 0..(1usize << d) {
        let s = DMatrix::from_fn(d, d, |r, c| {
            if r != c {
                0.0
            } else if signs >> r & 1 == 1 {
                -1.0
            } else {
                1.0
            }
        });
        let mut q = &pa * s * pb.transpose();
        let mut perm: Vec<usize> = Vec::new();
        let mut c = f64::INFINITY;
        for _ in 0..MAX_ITERS {
            let rotated = &am * &q;
            let p = best_permutation(&rotated, &bm, &mut cost);
            if p == perm {
                break;
            }
            perm = p;
            q = kabsch(&am, &bm, &perm);
            c = cost_of(&(&am * &q), &bm, &perm);
        }
        best = best.min(c);
    }
    best.max(0.0)
}

/// The aligned W2 between two equal-size sets of configurations (`[m, n·d]` each): exact OT with
/// cost D², square root taken (see the module docs). Pairwise costs run on all threads.
pub fn aligned_w2(a: &[f32], b: &[f32], shape: ParticleShape) -> Result<f64> {
    super::ot::w2_with_cost(a, b, shape.dim(), "aligned W2", |x, y| {
        aligned_sq_distance(x, y, shape)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
