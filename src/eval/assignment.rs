//! The linear sum assignment problem for the small n×n matrices of particle alignment: given a
//! cost c (row-major, finite), the permutation σ minimising Σ_i c[i, σ(i)].
//!
//! The aligned and geometric distances solve one such problem per alignment step — tens of
//! millions per evaluation at 55 particles — so this is the Jonker–Volgenant algorithm (LAPJV,
//! Jonker & Volgenant 1987, "A shortest augmenting path algorithm for dense and sparse linear
//! assignment problems"), which on these matrices is ~5–10× faster than the plain shortest
//! augmenting path of `lsap` / SciPy, with a workspace kept between calls (no allocation once
//! warm). Most of its time is the row scan of phase 3 (the two smallest reduced costs of a row,
//! ~100 scans per 55 × 55 solve), which runs in eight AVX-512 lanes with a branch-free reduction
//! where the CPU has AVX-512 (`best_two`; the portable version keeps the same lanes and result).
//! Its four phases, on column prices v (reduced cost c_ij − v_j):
//!
//! 1. **Column reduction**: v_j = min_i c_ij; each column is given to its arg-min row if that row
//!    has none yet (a row that is the arg-min of several keeps its cheapest column).
//! 2. **Reduction transfer**: a row holding exactly one column lowers that column's price by its
//!    second-best reduced cost, so the assignment stays optimal for the prices.
//! 3. **Augmenting row reduction** (two passes): each free row takes its best column, raising the
//!    price gap to its second best and evicting the previous owner, which continues — an
//!    auction-like pass that leaves few rows free.
//! 4. **Augmentation**: for each remaining free row a Dijkstra shortest path on reduced costs to an
//!    unassigned column, then the prices of the scanned columns are updated and the path flipped.
//!
//! The result is an optimal assignment (ties may be broken differently from `lsap`; the cost is
//! the same — tested against it on random and heavily tied matrices). The large OT problems of the
//! W2 metrics still use `lsap`.

use crate::error::{Error, Result};

const NONE: usize = usize::MAX;

/// A reusable solver: call [`Assignment::solve`] as often as needed; buffers grow to the largest n.
#[derive(Debug, Default, Clone)]
pub struct Assignment {
    v: Vec<f64>,
    dist: Vec<f64>,
    /// the row reaching each column's minimum (column reduction)
    colmin_row: Vec<usize>,
    pred: Vec<usize>,
    collist: Vec<usize>,
    free: Vec<usize>,
    matches: Vec<u32>,
    rowsol: Vec<usize>,
    colsol: Vec<usize>,
}

impl Assignment {
    pub fn new() -> Self {
        Self::default()
    }

    /// The optimal assignment of the n×n cost `cost` (row-major) as `perm[row] = column`.
    /// Errors on a wrongly sized or non-finite cost.
    pub fn solve(&mut self, n: usize, cost: &[f64]) -> Result<&[usize]> {
        self.check(n, cost)?;
        Ok(self.run(n, cost, false))
    }

    /// As [`Assignment::solve`] (`warm = false`) or [`Assignment::solve_warm`] for a cost the
    /// caller has already checked: n×n values, every one finite (the alignment loops know this
    /// from the sum of their costs, which they compute anyway; a check per call cost them ~10 %).
    pub fn solve_checked(&mut self, n: usize, cost: &[f64], warm: bool) -> &[usize] {
        assert_eq!(cost.len(), n * n, "an n×n cost");
        debug_assert!(self.check(n, cost).is_ok());
        let warm = warm && self.warm_prices(n);
        self.run(n, cost, warm)
    }

    /// Whether the prices of the previous call can start a problem of size n.
    fn warm_prices(&self, n: usize) -> bool {
        self.v.len() == n && self.v.iter().all(|v| v.is_finite())
    }

    /// As [`Assignment::solve`], starting from the column prices of the previous call (same n)
    /// instead of column reduction: every row starts free and the augmenting row reduction gives
    /// each its best column at those prices. For a cost close to the previous one (the next step
    /// of an alignment) most rows keep their column at once. Any prices are a valid start, so the
    /// result is optimal all the same; without a previous call of this size it is `solve`.
    pub fn solve_warm(&mut self, n: usize, cost: &[f64]) -> Result<&[usize]> {
        self.check(n, cost)?;
        let warm = self.warm_prices(n);
        Ok(self.run(n, cost, warm))
    }

    /// An n×n cost of finite values, or the error saying what is wrong.
    fn check(&self, n: usize, cost: &[f64]) -> Result<()> {
        if cost.len() != n * n {
            return Err(Error::Shape(format!(
                "assignment of an {n}×{n} cost needs {} values, got {}",
                n * n,
                cost.len()
            )));
        }
        if !all_finite(cost) {
            let k = cost.iter().position(|c| !c.is_finite()).unwrap_or(0);
            return Err(Error::NonFinite(format!(
                "assignment cost ({}, {}) is {}",
                k / n,
                k % n,
                cost[k]
            )));
        }
        Ok(())
    }

    fn run(&mut self, n: usize, cost: &[f64], warm: bool) -> &[usize] {
        self.reset(n, warm);
        if n == 0 {
            return &self.rowsol[..0];
        }
        if n == 1 {
            self.rowsol[0] = 0;
            return &self.rowsol[..1];
        }
        if warm {
            self.free.extend(0..n);
        } else {
            self.column_reduction(n, cost);
            self.reduction_transfer(n, cost);
        }
        for _ in 0..2 {
            self.augmenting_row_reduction(n, cost);
        }
        for f in 0..self.free.len() {
            let row = self.free[f];
            self.augment(n, cost, row);
        }
        &self.rowsol[..n]
    }

    fn reset(&mut self, n: usize, keep_prices: bool) {
        for v in [&mut self.rowsol, &mut self.colsol, &mut self.pred] {
            v.clear();
            v.resize(n, NONE);
        }
        self.collist.clear();
        self.collist.resize(n, 0);
        self.matches.clear();
        self.matches.resize(n, 0);
        if !keep_prices {
            self.v.clear();
            self.v.resize(n, 0.0);
        }
        self.dist.clear();
        self.dist.resize(n, 0.0);
        self.colmin_row.resize(n, 0);
        self.free.clear();
    }

    fn column_reduction(&mut self, n: usize, cost: &[f64]) {
        column_minima(cost, n, &mut self.v, &mut self.colmin_row);
        for j in (0..n).rev() {
            let imin = self.colmin_row[j];
            self.matches[imin] += 1;
            if self.matches[imin] == 1 {
                self.rowsol[imin] = j;
                self.colsol[j] = imin;
            } else if self.v[j] < self.v[self.rowsol[imin]] {
                let j1 = self.rowsol[imin];
                self.rowsol[imin] = j;
                self.colsol[j] = imin;
                self.colsol[j1] = NONE;
            } else {
                self.colsol[j] = NONE;
            }
        }
    }

    fn reduction_transfer(&mut self, n: usize, cost: &[f64]) {
        for i in 0..n {
            match self.matches[i] {
                0 => self.free.push(i),
                1 => {
                    let j1 = self.rowsol[i];
                    let row = &cost[i * n..(i + 1) * n];
                    let min = min_excluding(row, &self.v, j1);
                    self.v[j1] -= min;
                }
                _ => {}
            }
        }
    }

    fn augmenting_row_reduction(&mut self, n: usize, cost: &[f64]) {
        let previous = std::mem::take(&mut self.free);
        let mut stack: Vec<usize> = previous.iter().rev().copied().collect();
        let mut next_free = previous;
        next_free.clear();
        // each eviction that lowers a price continues with the evicted row; bound the chain so a
        // degenerate (tied) matrix cannot keep it going: what is left goes to augmentation
        let mut budget = 4 * n * n;
        while let Some(i) = stack.pop() {
            let row = &cost[i * n..(i + 1) * n];
            let (umin, mut j1, usubmin) = best_two(row, &self.v);
            let mut i0 = self.colsol[j1];
            if umin < usubmin {
                self.v[j1] -= usubmin - umin;
            } else if i0 != NONE {
                // a tie: take the other column at the same reduced cost
                let j2 = first_at(row, &self.v, usubmin, j1);
                if j2 != NONE {
                    j1 = j2;
                    i0 = self.colsol[j2];
                }
            }
            self.rowsol[i] = j1;
            self.colsol[j1] = i;
            if i0 != NONE {
                self.rowsol[i0] = NONE;
                if umin < usubmin && budget > 0 {
                    budget -= 1;
                    stack.push(i0);
                } else {
                    next_free.push(i0);
                }
            }
        }
        self.free = next_free;
    }

    /// Dijkstra from the free row `start` on reduced costs c_ij − v_j to the nearest unassigned
    /// column, price update of the scanned columns, then the path is flipped.
    fn augment(&mut self, n: usize, cost: &[f64], start: usize) {
        let row = &cost[start * n..(start + 1) * n];
        for (j, &c) in row.iter().enumerate() {
            self.dist[j] = c - self.v[j];
            self.pred[j] = start;
            self.collist[j] = j;
        }
        // collist[..low]: scanned (ready); collist[low..up]: at the current minimum, to scan;
        // collist[up..]: the rest
        let (mut low, mut up, mut ready) = (0, 0, 0);
        let mut min = 0.0;
        let end = 'search: loop {
            if up == low {
                ready = low;
                min = self.dist[self.collist[up]];
                up += 1;
                // the scan covers the columns after the first one as they were; `up` moves
                // while the columns at the new minimum are gathered
                let first = up;
                for k in first..n {
                    let j = self.collist[k];
                    let h = self.dist[j];
                    if h <= min {
                        if h < min {
                            up = low;
                            min = h;
                        }
                        self.collist[k] = self.collist[up];
                        self.collist[up] = j;
                        up += 1;
                    }
                }
                for k in low..up {
                    let j = self.collist[k];
                    if self.colsol[j] == NONE {
                        break 'search j;
                    }
                }
            }
            let j1 = self.collist[low];
            low += 1;
            let i = self.colsol[j1];
            let ri = &cost[i * n..(i + 1) * n];
            let h = ri[j1] - self.v[j1] - min;
            let mut k = up;
            while k < n {
                let j = self.collist[k];
                let v2 = ri[j] - self.v[j] - h;
                if v2 < self.dist[j] {
                    self.pred[j] = i;
                    if v2 == min {
                        if self.colsol[j] == NONE {
                            break 'search j;
                        }
                        self.collist[k] = self.collist[up];
                        self.collist[up] = j;
                        up += 1;
                    }
                    self.dist[j] = v2;
                }
                k += 1;
            }
        };
        for k in 0..ready {
            let j = self.collist[k];
            self.v[j] += self.dist[j] - min;
        }
        let mut j = end;
        loop {
            let i = self.pred[j];
            self.colsol[j] = i;
            let next = self.rowsol[i];
            self.rowsol[i] = j;
            if i == start {
                break;
            }
            j = next;
        }
    }
}

/// The smallest and second smallest reduced cost `row[j] − v[j]` of a row and the column of the
/// smallest (its first column, as a sequential scan finds it): `(umin, j1, usubmin)`. One pass
/// with eight lanes, each keeping its own two smallest values, compiled for the CPU's widest
/// vectors: the row scans of the augmenting row reduction are most of the solver's time.
fn best_two(row: &[f64], v: &[f64]) -> (f64, usize, f64) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx512() {
        // SAFETY: the CPU has AVX-512 F (checked just above).
        return unsafe { best_two_avx512(row, v) };
    }
    crate::multiversion!((row: &[f64], v: &[f64]) -> (f64, usize, f64) {
        best_two_kernel(row, v)
    })
}

/// [`best_two`] in AVX-512 intrinsics: the eight lanes in three registers (two smallest values,
/// column of the smallest), the last columns by a masked load padded with +∞. The same lanes as
/// [`best_two_kernel`]; the lane reduction is branch-free but picks the same values and column.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn best_two_avx512(row: &[f64], v: &[f64]) -> (f64, usize, f64) {
    use std::arch::x86_64::*;
    const L: usize = 8;
    let n = row.len().min(v.len());
    let inf = _mm512_set1_pd(f64::INFINITY);
    let (mut m1, mut m2, mut i1) = (inf, inf, _mm512_setzero_si512());
    let mut idx = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    let step = _mm512_set1_epi64(L as i64);
    let mut base = 0;
    while base < n {
        let left = n - base;
        let (r, w) = if left >= L {
            // SAFETY: columns base..base + 8 are within both slices.
            unsafe {
                (
                    _mm512_loadu_pd(row.as_ptr().add(base)),
                    _mm512_loadu_pd(v.as_ptr().add(base)),
                )
            }
        } else {
            let mask: __mmask8 = (1u8 << left) - 1;
            // SAFETY: the masked loads read only columns base..n.
            unsafe {
                (
                    _mm512_mask_loadu_pd(inf, mask, row.as_ptr().add(base)),
                    _mm512_maskz_loadu_pd(mask, v.as_ptr().add(base)),
                )
            }
        };
        let x = _mm512_sub_pd(r, w);
        let lower = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(x, m1);
        let below_second = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(x, m2);
        let second = _mm512_mask_blend_pd(below_second, m2, x);
        m2 = _mm512_mask_blend_pd(lower, second, m1);
        i1 = _mm512_mask_blend_epi64(lower, i1, idx);
        m1 = _mm512_mask_blend_pd(lower, m1, x);
        idx = _mm512_add_epi64(idx, step);
        base += L;
    }
    // branch-free lane reduction: the smallest value, the first column holding it (lowest
    // index among the lanes at that value), then the second smallest over the other lanes'
    // smallest and every lane's second
    let umin = _mm512_reduce_min_pd(m1);
    let at_min = _mm512_cmp_pd_mask::<_CMP_EQ_OQ>(m1, _mm512_set1_pd(umin));
    let j1 = _mm512_mask_reduce_min_epi64(at_min, i1);
    let lane1 = at_min & _mm512_cmpeq_epi64_mask(i1, _mm512_set1_epi64(j1));
    let others = _mm512_reduce_min_pd(_mm512_mask_blend_pd(lane1, m1, inf));
    let usubmin = _mm512_reduce_min_pd(m2).min(others);
    (umin, j1 as usize, usubmin)
}

#[inline(always)]
fn best_two_kernel(row: &[f64], v: &[f64]) -> (f64, usize, f64) {
    const L: usize = 8;
    let (mut m1, mut m2, mut i1) = ([f64::INFINITY; L], [f64::INFINITY; L], [0usize; L]);
    let mut lane = |k: usize, j: usize, x: f64| {
        let lower = x < m1[k];
        let second = if x < m2[k] { x } else { m2[k] };
        m2[k] = if lower { m1[k] } else { second };
        i1[k] = if lower { j } else { i1[k] };
        m1[k] = if lower { x } else { m1[k] };
    };
    let n = row.len().min(v.len());
    let full = n / L * L;
    for base in (0..full).step_by(L) {
        let (r, w) = (&row[base..base + L], &v[base..base + L]);
        for k in 0..L {
            lane(k, base + k, r[k] - w[k]);
        }
    }
    for j in full..n {
        lane(j - full, j, row[j] - v[j]);
    }
    // the lane holding the first column of the smallest value
    let mut k1 = 0;
    for k in 1..L {
        if m1[k] < m1[k1] || (m1[k] == m1[k1] && i1[k] < i1[k1]) {
            k1 = k;
        }
    }
    let mut usubmin = f64::INFINITY;
    for k in 0..L {
        let other = if k == k1 { m2[k] } else { m1[k].min(m2[k]) };
        usubmin = if other < usubmin { other } else { usubmin };
    }
    (m1[k1], i1[k1], usubmin)
}

/// Whether every value is finite (vectorised: the check runs on every cost the solver gets).
fn all_finite(x: &[f64]) -> bool {
    crate::multiversion!((x: &[f64]) -> bool {
        const EXP: u64 = 0x7ff0_0000_0000_0000;
        let mut bad = [0u64; 8];
        let chunks = x.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for (b, v) in bad.iter_mut().zip(c) {
                *b |= u64::from(v.to_bits() & EXP == EXP);
            }
        }
        rest.iter().all(|v| v.is_finite()) && bad.iter().all(|&b| b == 0)
    })
}

/// The first column other than `skip` whose reduced cost `row[j] − v[j]` equals `value`
/// (`NONE` if there is none): the second column of [`best_two`], needed only on ties.
fn first_at(row: &[f64], v: &[f64], value: f64, skip: usize) -> usize {
    (0..row.len())
        .find(|&j| j != skip && row[j] - v[j] == value)
        .unwrap_or(NONE)
}

/// min over j ≠ `skip` of the reduced cost `row[j] − v[j]` (vectorised).
fn min_excluding(row: &[f64], v: &[f64], skip: usize) -> f64 {
    crate::multiversion!((row: &[f64], v: &[f64], skip: usize) -> f64 {
        let end = row.len().min(v.len());
        let skip = skip.min(end);
        let after = (skip + 1).min(end);
        reduced_min(&row[..skip], &v[..skip]).min(reduced_min(&row[after..end], &v[after..end]))
    })
}

/// min_j (a[j] − b[j]) with eight lanes (+∞ for empty slices). A function, not a closure:
/// closures do not inherit the caller's `target_feature`s.
#[inline(always)]
fn reduced_min(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [f64::INFINITY; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x - y)
        .fold(f64::INFINITY, f64::min);
    for (c, w) in ca.zip(cb) {
        for ((m, &x), &y) in acc.iter_mut().zip(c).zip(w) {
            let h = x - y;
            *m = if h < *m { h } else { *m };
        }
    }
    acc.iter().fold(rest, |m, &x| if x < m { x } else { m })
}

/// Column minima of the n×n `cost` into `min`, and the first row reaching each into `row_of`,
/// scanning rows in order (vectorised over columns).
fn column_minima(cost: &[f64], n: usize, min: &mut [f64], row_of: &mut [usize]) {
    crate::multiversion!((cost: &[f64], n: usize, min: &mut [f64], row_of: &mut [usize]) -> () {
        let (min, row_of) = (&mut min[..n], &mut row_of[..n]);
        min.copy_from_slice(&cost[..n]);
        row_of.iter_mut().for_each(|r| *r = 0);
        for (i, ci) in cost.chunks_exact(n).enumerate().skip(1) {
            for ((m, r), &c) in min.iter_mut().zip(row_of.iter_mut()).zip(ci) {
                let lower = c < *m;
                *m = if lower { c } else { *m };
                *r = if lower { i } else { *r };
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::NormalStream;

    fn total(cost: &[f64], n: usize, perm: &[usize]) -> f64 {
        perm.iter().enumerate().map(|(i, &j)| cost[i * n + j]).sum()
    }

    fn is_permutation(perm: &[usize]) -> bool {
        let mut seen = vec![false; perm.len()];
        perm.iter()
            .all(|&j| j < perm.len() && !std::mem::replace(&mut seen[j], true))
    }

    #[test]
    fn optimal_cost_equals_lsap_on_random_and_tied_matrices() {
        let mut solver = Assignment::new();
        for n in (1..=40).chain([55, 64, 101, 200]) {
            for (seed, ties) in [(n as u64, false), (1000 + n as u64, true)] {
                let mut g = vec![0.0f32; n * n];
                NormalStream::new(seed, 0).fill(&mut g);
                // integers in 0..4 give many ties and many equal-cost optima
                let cost: Vec<f64> = g
                    .iter()
                    .map(|&x| {
                        if ties {
                            (f64::from(x).abs() * 2.0).floor()
                        } else {
                            f64::from(x) * 3.0
                        }
                    })
                    .collect();
                let want = lsap::get_assigned_cost(n, n, &cost, false).unwrap();
                let perm = solver.solve(n, &cost).unwrap().to_vec();
                assert!(is_permutation(&perm), "n={n}: {perm:?}");
                let got = total(&cost, n, &perm);
                assert!(
                    (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                    "n={n} ties={ties}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn warm_start_from_previous_prices_is_optimal_on_perturbed_and_unrelated_costs() {
        let mut solver = Assignment::new();
        for (n, seed) in [(5, 1u64), (13, 2), (55, 3), (80, 4)] {
            let mut g = vec![0.0f32; 3 * n * n];
            NormalStream::new(seed, 0).fill(&mut g);
            let base: Vec<f64> = g[..n * n].iter().map(|&x| f64::from(x).abs()).collect();
            solver.solve(n, &base).unwrap();
            let near: Vec<f64> = base
                .iter()
                .zip(&g[n * n..2 * n * n])
                .map(|(b, &e)| b + 0.1 * f64::from(e))
                .collect();
            let far: Vec<f64> = g[2 * n * n..].iter().map(|&x| f64::from(x) * 5.0).collect();
            for cost in [&near, &far, &base] {
                let want = lsap::get_assigned_cost(n, n, cost, false).unwrap();
                let perm = solver.solve_warm(n, cost).unwrap().to_vec();
                assert!(is_permutation(&perm));
                let got = total(cost, n, &perm);
                assert!(
                    (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                    "n={n}: {got} vs {want}"
                );
            }
        }
        // a different size falls back to the cold start
        let perm = solver
            .solve_warm(2, &[0.0, 1.0, 1.0, 0.0])
            .unwrap()
            .to_vec();
        assert_eq!(perm, vec![0, 1]);
    }

    #[test]
    fn squared_distances_of_a_shuffled_copy_give_the_inverse_shuffle() {
        let (n, d) = (55, 3);
        let mut x = vec![0.0f32; n * d];
        NormalStream::new(3, 0).fill(&mut x);
        let shuffle: Vec<usize> = (0..n).map(|i| (i * 17 + 5) % n).collect();
        let mut cost = vec![0.0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                let k = shuffle[j];
                cost[i * n + j] = (0..d)
                    .map(|c| f64::from(x[i * d + c] - x[k * d + c]).powi(2))
                    .sum();
            }
        }
        let perm = Assignment::new().solve(n, &cost).unwrap().to_vec();
        for (i, &j) in perm.iter().enumerate() {
            assert_eq!(shuffle[j], i);
        }
    }

    #[test]
    fn best_two_matches_a_sequential_scan_with_ties_and_every_length() {
        // the sequential scan the vectorised versions replace: first column of the smallest
        // reduced cost, and the second smallest over the other columns
        fn sequential(row: &[f64], v: &[f64]) -> (f64, usize, f64) {
            let h: Vec<f64> = row.iter().zip(v).map(|(c, p)| c - p).collect();
            let (mut umin, mut j1) = (h[0], 0);
            for (j, &x) in h.iter().enumerate().skip(1) {
                if x < umin {
                    umin = x;
                    j1 = j;
                }
            }
            let usubmin = h
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != j1)
                .fold(f64::INFINITY, |m, (_, &x)| m.min(x));
            (umin, j1, usubmin)
        }
        for n in 1..70 {
            for seed in 0..20u64 {
                let mut row = vec![0.0f32; n];
                NormalStream::new(seed, n as u64).fill(&mut row);
                // coarse values so that ties are common
                let row: Vec<f64> = row.iter().map(|&x| f64::from((x * 2.0).round())).collect();
                let v: Vec<f64> = (0..n)
                    .map(|j| ((j * 7 + seed as usize) % 3) as f64)
                    .collect();
                let want = sequential(&row, &v);
                assert_eq!(best_two(&row, &v), want, "n={n} seed={seed}");
                assert_eq!(
                    best_two_kernel(&row, &v),
                    want,
                    "portable, n={n} seed={seed}"
                );
                if n > 1 {
                    let skip = seed as usize % n;
                    let rest = (0..n)
                        .filter(|&j| j != skip)
                        .map(|j| row[j] - v[j])
                        .fold(f64::INFINITY, f64::min);
                    assert_eq!(min_excluding(&row, &v, skip), rest);
                }
            }
        }
    }

    #[test]
    fn checked_solve_agrees_with_solve_cold_and_warm() {
        let mut a = Assignment::new();
        let mut b = Assignment::new();
        for seed in 0..20u64 {
            let n = 1 + (seed as usize * 5) % 60;
            let mut c = vec![0.0f32; n * n];
            NormalStream::new(seed, 3).fill(&mut c);
            let c: Vec<f64> = c.iter().map(|&x| f64::from(x * x)).collect();
            let warm = seed % 2 == 1;
            let want = if warm {
                a.solve_warm(n, &c)
            } else {
                a.solve(n, &c)
            }
            .unwrap()
            .to_vec();
            assert_eq!(b.solve_checked(n, &c, warm), want.as_slice());
        }
    }

    #[test]
    fn refuses_non_finite_or_misshaped_costs() {
        let mut s = Assignment::new();
        assert!(s.solve(2, &[0.0, 1.0, f64::NAN, 2.0]).is_err());
        assert!(s.solve(2, &[0.0, 1.0, 2.0]).is_err());
        assert!(s.solve(0, &[]).unwrap().is_empty());
    }
}
