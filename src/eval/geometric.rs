//! The evaluation protocol of the adjoint-sampling papers (Havens et al. 2025, AS; Liu et al.
//! 2025, ASBS), so that idem's figures can stand beside their tables (`idem eval --protocol
//! adjoint-sampling`). It differs from idem's own metrics ([`super`]) in three ways:
//!
//! 1. **Rows.** `rows` generated samples (default 2000) against `rows` reference samples drawn
//!    *without replacement* from the reference set (seeded; when the generated set is larger, its
//!    rows are drawn the same way). idem's own metrics use the first rows of each file.
//! 2. **Geometric W2** (`as_geometric_w2`, the papers' "Eq-W2" / "geometric W2"): exact optimal
//!    transport between the two sets with cost c(x, y)² where, for configurations x, y (`[n, d]`,
//!    both centred on their mean),
//!
//!    ```text
//!    π  = Hungarian assignment of y's particles to x's, cost |x_i − y_j| (Euclidean, unsquared),
//!         on the positions as they are (no rotation first)
//!    Q  = Kabsch: the orthogonal d×d matrix (reflections allowed: no determinant correction)
//!         minimising |x − y_π·Q|²
//!    c(x, y) = |x − y_π·Q|   (all n·d coordinates)
//!    ```
//!
//!    One assignment and one Kabsch step, in that order, as the papers' code does. idem's own
//!    `aligned_w2` ([`super::aligned`]) minimises jointly over permutations and rotations (many
//!    starts, alternating until the permutation is stable), so c ≥ D of `aligned_w2` on every pair
//!    and `as_geometric_w2` ≥ `aligned_w2` up to the different rows. Same units (√n · RMSD).
//! 3. **Energy W2** (`as_energy_w2`): the 1-D W2 between the energies of the two sets (square
//!    root taken), on idem's energy — the same convention as the papers' code for DW-4 and
//!    LJ-n (Lennard-Jones over ordered pairs i ≠ j plus 0.5·|x − mean|²). Configurations with
//!    invalid energy (log p = −inf) cannot enter a W2 and are counted in `as_invalid_samples`.
//!    `as_dist_w2` is the 1-D W2 (square root taken) between all interatomic distances of the two
//!    sets; note that the papers' code logs this one *squared* ("dist_w2").
//!
//! The cost of the geometric W2 is rows² assignments of n×n (Jonker–Volgenant,
//! [`super::assignment`]): at 2000 rows, measured with idem's raw W2 of 5000 rows included, about
//! 30 CPU-seconds for LJ-13 and 4 CPU-minutes for LJ-55 (the papers skip LJ-55).

use rand::seq::index::sample as sample_indices;

use super::aligned::{Aligner, Prepared};
use super::{ot, valid_energies, Metrics};
use crate::energy::particles::{interatomic_distances, remove_mean};
use crate::energy::{ParticleShape, Target};
use crate::error::{Error, Result};
use crate::rng::stream;

/// Rows of each set in the papers' protocol.
pub const PROTOCOL_ROWS: usize = 2000;

/// c(x, y)² of the module docs for two configurations (flattened `[n·d]`).
pub fn geometric_sq_distance(x: &[f32], y: &[f32], shape: ParticleShape) -> f64 {
    Aligner::new().geometric_sq_distance(x, y, shape)
}

/// Geometric W2 between two equal-size sets of configurations (`[m, n·d]` each): exact OT with
/// cost [`geometric_sq_distance`], square root taken. Pairwise costs run on all threads.
pub fn geometric_w2(a: &[f32], b: &[f32], shape: ParticleShape) -> Result<f64> {
    let what = "geometric W2";
    let (pa, pb) = (
        Prepared::all(a, shape, what)?,
        Prepared::all(b, shape, what)?,
    );
    ot::w2_with_cost(&pa, &pb, what, |w: &mut Aligner, x, y| {
        w.geometric_sq_prepared(x, y, shape)
    })
}

/// `rows` rows of `x` (`[n, dim]`) drawn without replacement by `stream(seed, index)`, in the
/// order drawn; all of `x` in its order when it has exactly `rows` rows.
fn draw_rows(x: &[f32], dim: usize, rows: usize, seed: u64, index: u64) -> Vec<f32> {
    let n = x.len() / dim;
    if n == rows {
        return x.to_vec();
    }
    let mut rng = stream(seed, index);
    sample_indices(&mut rng, n, rows)
        .into_iter()
        .flat_map(|i| x[i * dim..(i + 1) * dim].iter().copied())
        .collect()
}

/// The papers' protocol (module docs) for a particle target: `as_geometric_w2`, `as_energy_w2`,
/// `as_dist_w2`, `as_invalid_samples`, `as_rows`, `as_seed`. Both sets need at least `rows` rows.
pub fn adjoint_sampling_protocol(
    target: &Target,
    samples: &[f32],
    reference: &[f32],
    rows: usize,
    seed: u64,
) -> Result<Metrics> {
    let shape = target.particles().ok_or_else(|| {
        Error::Config(format!(
            "the adjoint-sampling protocol is defined for particle systems; {} is not one",
            target.name()
        ))
    })?;
    let dim = target.dim();
    let (ns, nr) = (samples.len() / dim, reference.len() / dim);
    if rows == 0 || ns < rows || nr < rows {
        return Err(Error::Shape(format!(
            "the adjoint-sampling protocol compares {rows} generated with {rows} reference \
             samples drawn without replacement; got {ns} generated and {nr} reference rows \
             (generate more, or set fewer rows and report that number)"
        )));
    }
    if let Some(i) = samples.iter().chain(reference).position(|v| !v.is_finite()) {
        return Err(Error::NonFinite(format!(
            "value {i} of the samples/reference is not finite"
        )));
    }
    let mut s = draw_rows(samples, dim, rows, seed, 0);
    let mut r = draw_rows(reference, dim, rows, seed, 1);
    remove_mean(&mut s, shape);
    remove_mean(&mut r, shape);
    let mut m = Metrics::new();
    m.insert("as_rows".into(), rows as f64);
    m.insert("as_seed".into(), seed as f64);
    m.insert("as_geometric_w2".into(), geometric_w2(&s, &r, shape)?);
    let (es, bad) = valid_energies(target, &s)?;
    let (er, _) = valid_energies(target, &r)?;
    m.insert("as_invalid_samples".into(), bad as f64);
    if !es.is_empty() && !er.is_empty() {
        m.insert("as_energy_w2".into(), ot::wasserstein_1d(&es, &er, 2.0)?);
    }
    let dist = |x: &[f32]| -> Result<Vec<f64>> {
        Ok(interatomic_distances(x, shape)?
            .into_iter()
            .map(f64::from)
            .collect())
    };
    m.insert(
        "as_dist_w2".into(),
        ot::wasserstein_1d(&dist(&s)?, &dist(&r)?, 2.0)?,
    );
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::aligned::aligned_sq_distance;
    use crate::rng::NormalStream;

    const DW4: ParticleShape = ParticleShape {
        n_particles: 4,
        spatial_dim: 2,
    };

    fn rotate_2d(x: &[f32], angle: f64, perm: &[usize], mirror: bool) -> Vec<f32> {
        let (c, s) = (angle.cos(), angle.sin());
        let n = x.len() / 2;
        let mut out = vec![0.0f32; x.len()];
        for i in 0..n {
            let (px, py) = (f64::from(x[perm[i] * 2]), f64::from(x[perm[i] * 2 + 1]));
            let py = if mirror { -py } else { py };
            out[i * 2] = (c * px - s * py + 0.3) as f32;
            out[i * 2 + 1] = (s * px + c * py - 1.1) as f32;
        }
        out
    }

    #[test]
    fn geometric_distance_vanishes_under_permutation_small_rotation_translation_and_reflection() {
        // particles far apart, so the unrotated assignment is the right one
        let x = [3.0f32, 0.2, -2.5, 0.4, 0.3, 2.8, -0.6, -3.1];
        let perm = [2, 0, 3, 1];
        for angle in [0.0, 0.1, -0.15] {
            let y = rotate_2d(&x, angle, &perm, false);
            let d = geometric_sq_distance(&x, &y, DW4);
            assert!(d < 1e-9, "angle {angle}: {d}");
        }
        // a mirror image (particles near the mirror line, so each stays nearest to itself):
        // reflections are allowed
        let flat = [3.0f32, 0.2, -2.5, 0.4, 0.5, -0.3, -0.6, -0.25];
        let y = rotate_2d(&flat, 0.0, &perm, true);
        let d = geometric_sq_distance(&flat, &y, DW4);
        assert!(d < 1e-9, "mirror: {d}");
    }

    #[test]
    fn a_large_rotation_is_not_undone_the_protocol_assigns_before_it_aligns() {
        // the protocol's single assignment on unrotated positions: a quarter-turn pairs the
        // wrong particles, which the Kabsch step cannot repair; idem's joint alignment undoes it
        let mut x = vec![0.0f32; 4 * 2];
        NormalStream::new(3, 0).fill(&mut x);
        let y = rotate_2d(&x, std::f64::consts::FRAC_PI_2, &[0, 1, 2, 3], false);
        let geo = geometric_sq_distance(&x, &y, DW4);
        let joint = aligned_sq_distance(&x, &y, DW4);
        assert!(joint < 1e-9, "{joint}");
        assert!(geo > 1e-2, "{geo}");
    }

    #[test]
    fn geometric_distance_is_at_least_the_joint_alignment() {
        let shape = ParticleShape {
            n_particles: 13,
            spatial_dim: 3,
        };
        for seed in 0..20 {
            let mut x = vec![0.0f32; 39];
            let mut y = vec![0.0f32; 39];
            NormalStream::new(seed, 0).fill(&mut x);
            NormalStream::new(seed, 1).fill(&mut y);
            let geo = geometric_sq_distance(&x, &y, shape);
            let joint = aligned_sq_distance(&x, &y, shape);
            assert!(geo + 1e-9 >= joint, "seed {seed}: {geo} < {joint}");
            assert!(geo > 0.0);
        }
    }

    #[test]
    fn protocol_draws_distinct_rows_reproducibly_and_refuses_too_few() {
        let target = Target::by_name("dw4").unwrap();
        let mut a = vec![0.0f32; 300 * 8];
        let mut b = vec![0.0f32; 500 * 8];
        NormalStream::new(1, 0).fill(&mut a);
        NormalStream::new(2, 0).fill(&mut b);
        a.iter_mut().chain(b.iter_mut()).for_each(|v| *v *= 2.0);
        let drawn = draw_rows(&b, 8, 200, 0, 1);
        let mut rows: Vec<&[f32]> = drawn.chunks(8).collect();
        rows.sort_by(|p, q| p[0].total_cmp(&q[0]));
        rows.dedup();
        assert_eq!(rows.len(), 200, "rows are drawn without replacement");
        assert_eq!(drawn, draw_rows(&b, 8, 200, 0, 1));
        assert_ne!(drawn, draw_rows(&b, 8, 200, 1, 1));
        let m = adjoint_sampling_protocol(&target, &a, &b, 200, 0).unwrap();
        let again = adjoint_sampling_protocol(&target, &a, &b, 200, 0).unwrap();
        assert_eq!(m, again);
        assert!(m["as_geometric_w2"] > 0.0 && m["as_energy_w2"] > 0.0);
        assert_eq!(m["as_rows"], 200.0);
        // the same distribution scores lower than a wider one
        let mut c = vec![0.0f32; 300 * 8];
        NormalStream::new(3, 0).fill(&mut c);
        c.iter_mut().for_each(|v| *v *= 3.0);
        let wide = adjoint_sampling_protocol(&target, &c, &b, 200, 0).unwrap();
        assert!(wide["as_geometric_w2"] > m["as_geometric_w2"]);
        assert!(wide["as_dist_w2"] > m["as_dist_w2"]);
        let err = adjoint_sampling_protocol(&target, &a, &b, 400, 0).unwrap_err();
        assert!(err.to_string().contains("300 generated"), "{err}");
        let gmm = Target::by_name("gmm40").unwrap();
        assert!(adjoint_sampling_protocol(&gmm, &a[..200], &b[..200], 100, 0).is_err());
    }
}
