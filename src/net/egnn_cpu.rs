//! The EGNN of [`super::egnn`] as fused CPU kernels: forward and an analytic backward pass over a
//! flat parameter vector θ, multi-threaded over chunks of configurations.
//!
//! Why: candle's CPU backend runs one op at a time (single-threaded gathers and scatters, a copy
//! for every transpose), so the composed EGNN spent most of its time outside matrix products.
//! Here every configuration's graph is processed by one thread: the edge rows of a chunk of
//! configurations (≈ 768 edges) go through two `[E, H]·[H, H]` products per layer, and gathers,
//! activations, gates and scatters are fused loops over those rows.
//!
//! Backward: the forward pass keeps only node-level state per layer (h, x, the two halves of the
//! split first edge layer P = h·W_srcᵀ and Q = h·W_dstᵀ, the aggregated messages and the node
//! MLP's pre-activation: `5H + d` floats per particle per layer); edge-level activations are
//! recomputed layer by layer during the backward pass of each chunk (one extra forward of the
//! edge MLPs, 4 of 12 flops in 16), so memory stays O(B·n·H) even for LJ-55 — unless the batch's
//! edge activations fit in [`EDGE_CACHE_BYTES`] (DW-4, small LJ-13 batches): then the forward pass
//! writes them straight into the cache (`7H + 4 + 2d` floats per edge per layer, see `EdgeAct`)
//! and the backward pass reads them there in place instead of recomputing (the same numbers, bit
//! for bit; no copies through the scratch).
//!
//! Determinism: chunks are split into [`GROUPS`] contiguous groups whose parameter gradients are
//! summed in a fixed order, so results do not depend on the thread count.
//!
//! The maths (per layer; i receives from j over ordered pairs i ≠ j, e = (i, j)):
//! ```text
//! d_e = x_i − x_j, r_e = |d_e|², den_e = √(r_e + 1e-8) + 1, u_e = d_e / den_e
//! pre_e = P_i + Q_j + r_e·w_r + a_e·w_a + b₁, s_e = SiLU(pre_e)
//! m⁰_e = SiLU(s_e·W₂ᵀ + b₂), g_e = σ(m⁰_e·w_att + b_att), m_e = g_e·m⁰_e
//! c_e = SiLU(m_e·W_c1ᵀ + b_c1)·w_c2, c′_e = range·tanh(c_e)
//! x_i ← x_i + Σ_j u_e·c′_e,  agg_i = Σ_j m_e,  h_i ← h_i + SiLU([h_i, agg_i]·W_n1ᵀ + b_n1)·W_n2ᵀ + b_n2
//! ```
//! with a_e = |x⁰_i − x⁰_j|² of the input and h⁰_i = t·w_emb + b_emb; output x_L − x⁰, mean-free.
//!
//! Layer 0 is symmetric: h⁰ depends on t alone, so P_i = P_j and Q_i = Q_j, and r_e = a_e is
//! symmetric in i and j; hence pre, s, m⁰, g, m and c′ of (i, j) equal those of (j, i). Layer 0
//! runs its edge MLP once per unordered pair i < j (half the rows; d and u are antisymmetric:
//! x_i gets +u·c′, x_j gets −u·c′, both get m in their aggregate), and its backward pass adds the
//! two directions' gradients into the pair's row. The other layers use the ordered pairs.
//!
//! Rows are fused where the data is in L1: the first edge layer's gather with its SiLU, the
//! second layer's bias + SiLU with the attention gate, the coordinate MLP's bias + SiLU with the
//! c′ dot product; in the backward pass the SiLU′ factors, bias sums and gate are applied per row.

use rayon::prelude::*;

use super::fused::FusedKernel;
use std::cell::RefCell;

use super::dense::{
    add_col_sums, axpy, bias_silu, bias_silu_row, dot_f32, gemm_nn, gemm_nt, gemm_tn, mul_assign,
    sigmoid, silu_keep_grad,
};

/// Number of contiguous chunk groups whose gradients are summed in a fixed order.
pub const GROUPS: usize = 4;
/// Edge rows per chunk the chunking aims for (whole configurations per chunk).
const TARGET_EDGES: usize = 768;
/// Largest edge-activation cache a training forward pass keeps (module docs).
pub const EDGE_CACHE_BYTES: usize = 256 << 20;

/// Shape and options of an EGNN.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EgnnDims {
    /// Particles.
    pub n: usize,
    /// Spatial dimension.
    pub d: usize,
    /// Hidden width H.
    pub h: usize,
    pub layers: usize,
    pub attention: bool,
    pub tanh: bool,
    /// Per-layer coordinate range (coords_range / layers) when `tanh`.
    pub range: f32,
}

/// Offsets of one layer's parameters in θ (PyTorch layout: weights `[out, in]`).
#[derive(Clone, Copy, Debug)]
struct LayerOff {
    w_src: usize,
    w_dst: usize,
    w_r: usize,
    w_a: usize,
    b1: usize,
    w2: usize,
    b2: usize,
    w_att: usize,
    b_att: usize,
    wc1: usize,
    bc1: usize,
    wc2: usize,
    wn1: usize,
    bn1: usize,
    wn2: usize,
    bn2: usize,
}

/// The fused EGNN: parameter layout and kernels.
#[derive(Clone, Debug)]
pub struct EgnnCpu {
    dims: EgnnDims,
    specs: Vec<(String, Vec<usize>)>,
    emb_w: usize,
    emb_b: usize,
    layers: Vec<LayerOff>,
    total: usize,
    /// Edge-activation cache limit of this kernel ([`EDGE_CACHE_BYTES`] unless changed).
    edge_cache_bytes: usize,
    /// The edges of one configuration in layers ≥ 1: ordered pairs (i, j), i ≠ j, i major.
    ordered: Vec<(usize, usize)>,
    /// The edges of one configuration in layer 0: unordered pairs (i, j), i < j (module docs).
    pairs: Vec<(usize, usize)>,
}

impl EgnnCpu {
    /// The kernels for `dims`, with θ laid out as [`EgnnCpu::param_specs`].
    pub fn new(dims: EgnnDims) -> Self {
        let h = dims.h;
        let mut specs: Vec<(String, Vec<usize>)> = Vec::new();
        let mut off = 0usize;
        let mut push = |name: String, shape: Vec<usize>| {
            let o = off;
            off += shape.iter().product::<usize>();
            specs.push((name, shape));
            o
        };
        let emb_w = push("emb.weight".into(), vec![h, 1]);
        let emb_b = push("emb.bias".into(), vec![h]);
        let mut layers = Vec::with_capacity(dims.layers);
        for l in 0..dims.layers {
            let p = format!("gcl{l}");
            let w_src = push(format!("{p}.edge1.w_src"), vec![h, h]);
            let w_dst = push(format!("{p}.edge1.w_dst"), vec![h, h]);
            let w_r = push(format!("{p}.edge1.w_radial"), vec![1, h]);
            let w_a = push(format!("{p}.edge1.w_attr"), vec![1, h]);
            let b1 = push(format!("{p}.edge1.bias"), vec![h]);
            let w2 = push(format!("{p}.edge2.weight"), vec![h, h]);
            let b2 = push(format!("{p}.edge2.bias"), vec![h]);
            let (w_att, b_att) = if dims.attention {
                (
                    push(format!("{p}.att.weight"), vec![1, h]),
                    push(format!("{p}.att.bias"), vec![1]),
                )
            } else {
                (usize::MAX, usize::MAX)
            };
            let wc1 = push(format!("{p}.coord1.weight"), vec![h, h]);
            let bc1 = push(format!("{p}.coord1.bias"), vec![h]);
            let wc2 = push(format!("{p}.coord2.weight"), vec![h, 1]);
            let wn1 = push(format!("{p}.node1.weight"), vec![h, 2 * h]);
            let bn1 = push(format!("{p}.node1.bias"), vec![h]);
            let wn2 = push(format!("{p}.node2.weight"), vec![h, h]);
            let bn2 = push(format!("{p}.node2.bias"), vec![h]);
            layers.push(LayerOff {
                w_src,
                w_dst,
                w_r,
                w_a,
                b1,
                w2,
                b2,
                w_att,
                b_att,
                wc1,
                bc1,
                wc2,
                wn1,
                bn1,
                wn2,
                bn2,
            });
        }
        Self {
            dims,
            specs,
            emb_w,
            emb_b,
            layers,
            total: off,
            edge_cache_bytes: EDGE_CACHE_BYTES,
            ordered: (0..dims.n)
                .flat_map(|i| (0..dims.n).filter(move |&j| j != i).map(move |j| (i, j)))
                .collect(),
            pairs: (0..dims.n)
                .flat_map(|i| (i + 1..dims.n).map(move |j| (i, j)))
                .collect(),
        }
    }

    /// The same kernels with another edge-cache limit (0: always recompute in the backward pass).
    pub fn with_edge_cache_bytes(mut self, bytes: usize) -> Self {
        self.edge_cache_bytes = bytes;
        self
    }

    /// The network's shape.
    pub fn dims(&self) -> &EgnnDims {
        &self.dims
    }

    /// Parameter names and shapes, in θ order (the names of [`super::Egnn`]'s parameters).
    pub fn param_specs(&self) -> &[(String, Vec<usize>)] {
        &self.specs
    }

    /// Length of θ.
    pub fn param_count(&self) -> usize {
        self.total
    }

    /// Floats of node cache per particle per layer: h, x, P, Q, agg, zn1.
    fn per_node(&self) -> usize {
        5 * self.dims.h + self.dims.d
    }

    /// Floats per edge per layer of the edge-activation cache: pre, s, z₂, m⁰, m, z_c1, c1
    /// (`H` each), gate, c′, r, den (1 each), d and u (`d` each).
    fn per_edge(&self) -> usize {
        edge_floats(self.dims.h, self.dims.d)
    }

    /// Edge rows of layer `l` per configuration: the n(n − 1)/2 unordered pairs in layer 0, whose
    /// edge MLP is symmetric in i and j (module docs), the n(n − 1) ordered pairs in the others.
    fn layer_edges(&self, l: usize) -> usize {
        if l == 0 {
            self.pairs.len()
        } else {
            self.ordered.len()
        }
    }

    /// The edges of one configuration in layer `l` (see [`EgnnCpu::layer_edges`]).
    fn edge_list(&self, l: usize) -> &[(usize, usize)] {
        if l == 0 {
            &self.pairs
        } else {
            &self.ordered
        }
    }

    /// Edge rows per configuration in the layers before `l` (all layers: `l` = layers).
    fn edge_rows_before(&self, l: usize) -> usize {
        (0..l).map(|k| self.layer_edges(k)).sum()
    }

    /// Whether a training forward pass over a batch of `b` keeps the edge activations.
    pub fn caches_edges(&self, b: usize) -> bool {
        b * self.edge_rows_before(self.dims.layers) * self.per_edge() * 4 <= self.edge_cache_bytes
    }

    /// Cache floats per configuration: node states, and edge activations when they fit.
    fn per_config(&self, b: usize) -> usize {
        let nodes = self.dims.n * self.dims.layers * self.per_node();
        if self.caches_edges(b) {
            nodes + self.edge_rows_before(self.dims.layers) * self.per_edge()
        } else {
            nodes
        }
    }

    /// Length of the cache that [`EgnnCpu::forward`] fills for a batch of `b`.
    pub fn cache_len(&self, b: usize) -> usize {
        b * self.per_config(b)
    }

    /// Configurations per chunk for a batch of `b`: about [`TARGET_EDGES`] edge rows, and at
    /// least 2·[`GROUPS`] chunks when the batch allows.
    fn chunk_configs(&self, b: usize) -> usize {
        let per = self.dims.n * (self.dims.n - 1);
        let by_edges = (TARGET_EDGES / per).max(1);
        let by_spread = b.div_ceil(2 * GROUPS).max(1);
        by_edges.min(by_spread)
    }

    fn check(&self, theta: &[f32], x: &[f32], t: &[f32]) -> usize {
        let b = t.len();
        let dim = self.dims.n * self.dims.d;
        assert_eq!(theta.len(), self.total, "θ has the wrong length");
        assert_eq!(x.len(), b * dim, "x must be [B, n·d] with B = t.len()");
        b
    }
}

impl FusedKernel for EgnnCpu {
    fn name(&self) -> &'static str {
        "egnn-cpu"
    }

    /// out `[B, n·d]` = the network at (x `[B, n·d]`, t `[B]`). With `cache`, the node states
    /// needed by the backward pass are written there (resized to [`EgnnCpu::cache_len`]).
    fn forward(
        &self,
        theta: &[f32],
        x: &[f32],
        t: &[f32],
        out: &mut [f32],
        cache: Option<&mut Vec<f32>>,
    ) {
        let b = self.check(theta, x, t);
        let dims = self.dims;
        let dim = dims.n * dims.d;
        assert_eq!(out.len(), b * dim);
        if b == 0 {
            return;
        }
        let cpc = self.chunk_configs(b);
        let node_block = cpc * dims.n * dims.layers * self.per_node();
        match cache {
            Some(cache) => {
                // every element the backward pass reads is written below (the last layer's
                // node-MLP slot is neither written nor read): a reused buffer is not cleared
                cache.resize(self.cache_len(b), 0.0);
                let edges = self.caches_edges(b);
                out.par_chunks_mut(cpc * dim)
                    .zip(cache.par_chunks_mut(cpc * self.per_config(b)))
                    .zip(x.par_chunks(cpc * dim))
                    .zip(t.par_chunks(cpc))
                    .for_each(|(((o, block), xc), tc)| {
                        let (nodes, ec) =
                            block.split_at_mut(tc.len() * dims.n * dims.layers * self.per_node());
                        let ec = if edges { Some(ec) } else { None };
                        with_scratch(&dims, cpc, 0, |scr| {
                            let k = self;
                            crate::multiversion!((k: &EgnnCpu, theta: &[f32], xc: &[f32],
                                tc: &[f32], o: &mut [f32], nodes: &mut [f32],
                                ec: Option<&mut [f32]>, scr: &mut Scratch) -> () {
                                k.forward_chunk(theta, xc, tc, o, nodes, ec, scr)
                            })
                        })
                    });
            }
            None => {
                out.par_chunks_mut(cpc * dim)
                    .zip(x.par_chunks(cpc * dim))
                    .zip(t.par_chunks(cpc))
                    .for_each(|((o, xc), tc)| {
                        with_scratch(&dims, cpc, node_block, |scr| {
                            let len = tc.len() * dims.n * dims.layers * self.per_node();
                            let mut nodes = std::mem::take(&mut scr.nodes);
                            let (k, nb) = (self, &mut nodes[..len]);
                            crate::multiversion!((k: &EgnnCpu, theta: &[f32], xc: &[f32],
                                tc: &[f32], o: &mut [f32], nb: &mut [f32],
                                scr: &mut Scratch) -> () {
                                k.forward_chunk(theta, xc, tc, o, nb, None, scr)
                            });
                            scr.nodes = nodes;
                        })
                    });
            }
        }
    }

    /// Gradients of Σ gout·out: added to `gtheta` (`[P]`), written to `gx` (`[B, n·d]`).
    /// `cache` must come from the forward pass with the same θ, x and t.
    fn backward(
        &self,
        theta: &[f32],
        x: &[f32],
        t: &[f32],
        cache: &[f32],
        gout: &[f32],
        gtheta: &mut [f32],
        gx: Option<&mut [f32]>,
    ) {
        let b = self.check(theta, x, t);
        // the input gradient costs little beside the coordinate chain: always computed
        let mut own = Vec::new();
        let gx = match gx {
            Some(g) => g,
            None => {
                own.resize(x.len(), 0.0);
                &mut own[..]
            }
        };
        let dims = self.dims;
        let dim = dims.n * dims.d;
        assert_eq!(
            cache.len(),
            self.cache_len(b),
            "cache does not match the batch"
        );
        assert_eq!(gout.len(), b * dim);
        assert_eq!(gx.len(), b * dim);
        assert_eq!(gtheta.len(), self.total);
        if b == 0 {
            return;
        }
        let cpc = self.chunk_configs(b);
        let chunks = b.div_ceil(cpc);
        let per_group = chunks.div_ceil(GROUPS);
        let block = cpc * self.per_config(b);
        let edges = self.caches_edges(b);
        // group g: chunks [g·per_group, (g+1)·per_group)
        let span = per_group * cpc;
        let partial: Vec<Vec<f32>> = gx
            .par_chunks_mut(span * dim)
            .enumerate()
            .map(|(g, gx_g)| {
                let mut acc = vec![0.0f32; self.total];
                let c0 = g * span;
                for (k, gx_c) in gx_g.chunks_mut(cpc * dim).enumerate() {
                    let s = c0 + k * cpc;
                    let e = (s + cpc).min(b);
                    let chunk = s / cpc;
                    let (nodes, ec) = cache[chunk * block..][..(e - s) * self.per_config(b)]
                        .split_at((e - s) * dims.n * dims.layers * self.per_node());
                    let ec = if edges { Some(ec) } else { None };
                    let (xs, ts, gs) = (&x[s * dim..e * dim], &t[s..e], &gout[s * dim..e * dim]);
                    with_scratch(&dims, cpc, 0, |scr| {
                        let (k, acc) = (self, &mut acc[..]);
                        crate::multiversion!((k: &EgnnCpu, theta: &[f32], xs: &[f32],
                            ts: &[f32], nodes: &[f32], ec: Option<&[f32]>, gs: &[f32],
                            acc: &mut [f32], gx_c: &mut [f32], scr: &mut Scratch) -> () {
                            k.backward_chunk(theta, xs, ts, nodes, ec, gs, acc, gx_c, scr)
                        })
                    });
                }
                acc
            })
            .collect();
        for p in &partial {
            for (a, v) in gtheta.iter_mut().zip(p) {
                *a += v;
            }
        }
    }
}

impl EgnnCpu {
    /// Offsets within a chunk's node block for layer `l` (`m` particles in the chunk).
    fn node_offsets(&self, l: usize, m: usize) -> NodeOff {
        let (h, d) = (self.dims.h, self.dims.d);
        let base = l * m * self.per_node();
        NodeOff {
            h: base,
            x: base + m * h,
            p: base + m * (h + d),
            q: base + m * (2 * h + d),
            agg: base + m * (3 * h + d),
            zn1: base + m * (4 * h + d),
            end: base + m * self.per_node(),
        }
    }

    /// Forward of one chunk of `tc.len()` configurations. Called through
    /// [`crate::multiversion!`] (see [`FusedKernel::forward`] above): compiled for the CPU's
    /// widest vector extension, so the gathers, activations and scatters around the products
    /// vectorise with it (the arithmetic is the same, so are the results).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn forward_chunk(
        &self,
        th: &[f32],
        xc: &[f32],
        tc: &[f32],
        out: &mut [f32],
        nodes: &mut [f32],
        mut edges: Option<&mut [f32]>,
        scr: &mut Scratch,
    ) {
        let EgnnDims { n, d, h, .. } = self.dims;
        let c = tc.len();
        let m = c * n;
        // h⁰ = t·w_emb + b_emb, x⁰ = input
        {
            let o = self.node_offsets(0, m);
            let (wv, bv) = (&th[self.emb_w..][..h], &th[self.emb_b..][..h]);
            for (ci, &tv) in tc.iter().enumerate() {
                for i in 0..n {
                    let row = &mut nodes[o.h + (ci * n + i) * h..][..h];
                    for ((r, &w), &bb) in row.iter_mut().zip(wv).zip(bv) {
                        *r = tv * w + bb;
                    }
                }
            }
            nodes[o.x..o.x + m * d].copy_from_slice(xc);
        }
        self.attributes(xc, c, &mut scr.attr);
        let (pe, keep) = (self.per_edge(), edges.is_some());
        for l in 0..self.dims.layers {
            // layer 0 runs on unordered pairs (sym): each row stands for (i, j) and (j, i)
            let (list, sym) = (self.edge_list(l), l == 0);
            let ne = c * list.len();
            let o = self.node_offsets(l, m);
            let (cur, rest) = nodes.split_at_mut(o.end);
            let cur = &mut cur[o.h..];
            let (hx, pqaz) = cur.split_at_mut(m * (h + d));
            let (hl, xl) = hx.split_at(m * h);
            let (p, qaz) = pqaz.split_at_mut(m * h);
            let (q, az) = qaz.split_at_mut(m * h);
            let (agg, zn1) = az.split_at_mut(m * h);
            let lo = self.layers[l];
            if l == 0 {
                // h⁰ is the same for every particle of a configuration (it depends on t
                // alone): one row per configuration, copied to the others
                gemm_nt(c, h, h, hl, n * h, &th[lo.w_src..], h, p, n * h, false);
                gemm_nt(c, h, h, hl, n * h, &th[lo.w_dst..], h, q, n * h, false);
                broadcast_first(p, n, h);
                broadcast_first(q, n, h);
            } else {
                gemm_nt(m, h, h, hl, h, &th[lo.w_src..], h, p, h, false);
                gemm_nt(m, h, h, hl, h, &th[lo.w_dst..], h, q, h, false);
            }
            // edge activations: straight into the cache when it keeps them, else the scratch
            let block = match edges.as_deref_mut() {
                Some(ec) => &mut ec[c * self.edge_rows_before(l) * pe..][..ne * pe],
                None => &mut scr.edge[..ne * pe],
            };
            let mut ea = EdgeAct::split(block, ne, h, d);
            self.edges_forward(th, &lo, c, list, xl, p, q, &scr.attr, &mut ea, keep);
            // x_new, agg (the last layer's node update does not reach the output: its agg and
            // node MLP are skipped, and their parameters get zero gradients in the backward pass)
            let last = l + 1 == self.dims.layers;
            let (xn, hn) = (&mut scr.x_new, &mut scr.h_new);
            xn[..m * d].copy_from_slice(xl);
            agg.fill(0.0);
            // a pair's row also updates j: u_ji = −u_ij, and c′ and m are those of (i, j)
            for ci in 0..c {
                for (k, &(i, j)) in list.iter().enumerate() {
                    let e = ci * list.len() + k;
                    let (vi, vj) = (ci * n + i, ci * n + j);
                    let cp = ea.cp[e];
                    let u = &ea.unit[e * d..][..d];
                    for (xv, &uv) in xn[vi * d..][..d].iter_mut().zip(u) {
                        *xv += uv * cp;
                    }
                    if sym {
                        for (xv, &uv) in xn[vj * d..][..d].iter_mut().zip(u) {
                            *xv -= uv * cp;
                        }
                    }
                    if !last {
                        let mrow = &ea.m[e * h..][..h];
                        for (a, &mv) in agg[vi * h..][..h].iter_mut().zip(mrow) {
                            *a += mv;
                        }
                        if sym {
                            for (a, &mv) in agg[vj * h..][..h].iter_mut().zip(mrow) {
                                *a += mv;
                            }
                        }
                    }
                }
            }
            if last {
                // output: x_L − x⁰, mean over particles removed
                for ci in 0..c {
                    let o = &mut out[ci * n * d..][..n * d];
                    let xs = &xn[ci * n * d..][..n * d];
                    let x0 = &xc[ci * n * d..][..n * d];
                    for k in 0..n * d {
                        o[k] = xs[k] - x0[k];
                    }
                    for a in 0..d {
                        let mean = (0..n).map(|i| o[i * d + a]).sum::<f32>() / n as f32;
                        for i in 0..n {
                            o[i * d + a] -= mean;
                        }
                    }
                }
                continue;
            }
            // node MLP: zn1 = [h, agg]·W_n1ᵀ + b_n1, h_new = h + SiLU(zn1)·W_n2ᵀ + b_n2
            if l == 0 {
                gemm_nt(c, h, h, hl, n * h, &th[lo.wn1..], 2 * h, zn1, n * h, false);
                broadcast_first(zn1, n, h);
            } else {
                gemm_nt(m, h, h, hl, h, &th[lo.wn1..], 2 * h, zn1, h, false);
            }
            gemm_nt(m, h, h, agg, h, &th[lo.wn1 + h..], 2 * h, zn1, h, true);
            let u = &mut scr.u[..m * h];
            bias_silu(zn1, &th[lo.bn1..][..h], u);
            let hn = &mut hn[..m * h];
            hn.copy_from_slice(hl);
            gemm_nt(m, h, h, u, h, &th[lo.wn2..], h, hn, h, true);
            let bn2 = &th[lo.bn2..][..h];
            for row in hn.chunks_exact_mut(h) {
                for (r, &bb) in row.iter_mut().zip(bn2) {
                    *r += bb;
                }
            }
            let on = self.node_offsets(l + 1, m);
            let next = &mut rest[on.h - o.end..];
            next[..m * h].copy_from_slice(hn);
            next[m * h..m * (h + d)].copy_from_slice(&xn[..m * d]);
        }
    }

    /// Index of the ordered edge (i, j) of configuration `ci` in a chunk's ordered edges (the
    /// layout of the edge attributes).
    #[inline(always)]
    fn ordered_edge(&self, ci: usize, i: usize, j: usize) -> usize {
        let n = self.dims.n;
        ci * n * (n - 1) + i * (n - 1) + j - usize::from(j > i)
    }

    /// a_e = |x⁰_i − x⁰_j|² for every ordered edge of the chunk.
    fn attributes(&self, x0: &[f32], c: usize, attr: &mut [f32]) {
        let (n, d) = (self.dims.n, self.dims.d);
        let mut e = 0;
        for ci in 0..c {
            let xs = &x0[ci * n * d..][..n * d];
            for i in 0..n {
                for j in 0..n {
                    if i != j {
                        attr[e] = (0..d)
                            .map(|a| (xs[i * d + a] - xs[j * d + a]).powi(2))
                            .sum();
                        e += 1;
                    }
                }
            }
        }
    }

    /// Edge activations of one layer for a chunk of `c` configurations (into `ea`, one row per
    /// entry of `list` per configuration), from the layer's coordinates `xl`, split first-layer
    /// products `p`, `q` and the edge attributes `attr` (over ordered edges).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn edges_forward(
        &self,
        th: &[f32],
        lo: &LayerOff,
        c: usize,
        list: &[(usize, usize)],
        xl: &[f32],
        p: &[f32],
        q: &[f32],
        attr: &[f32],
        ea: &mut EdgeAct<&mut [f32]>,
        keep_grad: bool,
    ) {
        let EgnnDims { n, d, h, .. } = self.dims;
        let ne = c * list.len();
        let (wr, wa, b1) = (&th[lo.w_r..][..h], &th[lo.w_a..][..h], &th[lo.b1..][..h]);
        let mut e = 0;
        for ci in 0..c {
            for &(i, j) in list {
                let (vi, vj) = (ci * n + i, ci * n + j);
                let mut r = 0.0f32;
                for a in 0..d {
                    let dv = xl[vi * d + a] - xl[vj * d + a];
                    ea.diff[e * d + a] = dv;
                    r += dv * dv;
                }
                let den = (r + 1e-8).sqrt() + 1.0;
                for a in 0..d {
                    ea.unit[e * d + a] = ea.diff[e * d + a] / den;
                }
                ea.r[e] = r;
                ea.den[e] = den;
                let at = attr[self.ordered_edge(ci, i, j)];
                let row = &mut ea.pre[e * h..][..h];
                let (pi, qj) = (&p[vi * h..][..h], &q[vj * h..][..h]);
                for k in 0..h {
                    row[k] = pi[k] + qj[k] + r * wr[k] + at * wa[k] + b1[k];
                }
                // s = SiLU(pre) while the row is in L1 (with keep_grad, pre ← SiLU′(pre))
                bias_silu_row(row, None, &mut ea.s1[e * h..][..h], keep_grad);
                e += 1;
            }
        }
        // m⁰ = SiLU(s·W₂ᵀ + b₂), then row by row the gate and m = g·m⁰
        gemm_nt(ne, h, h, ea.s1, h, &th[lo.w2..], h, ea.z2, h, false);
        let b2 = &th[lo.b2..][..h];
        for e in 0..ne {
            let m0 = &mut ea.m0[e * h..][..h];
            bias_silu_row(&mut ea.z2[e * h..][..h], Some(b2), m0, keep_grad);
            let m = &mut ea.m[e * h..][..h];
            if self.dims.attention {
                let (watt, batt) = (&th[lo.w_att..][..h], th[lo.b_att]);
                let g = sigmoid(dot_f32(m0, watt) + batt);
                ea.gate[e] = g;
                for (mv, &v) in m.iter_mut().zip(m0.iter()) {
                    *mv = g * v;
                }
            } else {
                m.copy_from_slice(m0);
            }
        }
        // c′ = range·tanh(SiLU(m·W_c1ᵀ + b_c1)·w_c2), row by row after the product
        gemm_nt(ne, h, h, ea.m, h, &th[lo.wc1..], h, ea.zc1, h, false);
        let (bc1, wc2) = (&th[lo.bc1..][..h], &th[lo.wc2..][..h]);
        for e in 0..ne {
            let c1 = &mut ea.c1[e * h..][..h];
            bias_silu_row(&mut ea.zc1[e * h..][..h], Some(bc1), c1, keep_grad);
            let cv = dot_f32(c1, wc2);
            ea.cp[e] = if self.dims.tanh {
                self.dims.range * cv.tanh()
            } else {
                cv
            };
        }
    }

    /// Backward of one chunk: parameter gradients added to `acc`, input gradient into `gx_out`
    /// (called through [`crate::multiversion!`] as [`EgnnCpu::forward_chunk`]).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn backward_chunk(
        &self,
        th: &[f32],
        xc: &[f32],
        tc: &[f32],
        nodes: &[f32],
        edges: Option<&[f32]>,
        gout: &[f32],
        acc: &mut [f32],
        gx_out: &mut [f32],
        scr: &mut Scratch,
    ) {
        let EgnnDims { n, d, h, .. } = self.dims;
        let c = tc.len();
        let m = c * n;
        let ne_all = c * n * (n - 1);
        let pe = self.per_edge();
        // gradient w.r.t. x_L: gout with the mean over particles removed
        let mut gx = std::mem::take(&mut scr.gx);
        let mut gx_new = std::mem::take(&mut scr.gx_new);
        let mut gh = std::mem::take(&mut scr.gh);
        let mut gh_new = std::mem::take(&mut scr.gh_new);
        for ci in 0..c {
            let g = &gout[ci * n * d..][..n * d];
            let o = &mut gx[ci * n * d..][..n * d];
            for a in 0..d {
                let mean = (0..n).map(|i| g[i * d + a]).sum::<f32>() / n as f32;
                for i in 0..n {
                    o[i * d + a] = g[i * d + a] - mean;
                }
            }
        }
        // the direct path out = x_L − x⁰
        for (o, &v) in gx_out.iter_mut().zip(&gx[..m * d]) {
            *o = -v;
        }
        gh[..m * h].fill(0.0);
        self.attributes(xc, c, &mut scr.attr);
        scr.gattr[..ne_all].fill(0.0);
        for l in (0..self.dims.layers).rev() {
            let lo = self.layers[l];
            // layer 0: one row per unordered pair, standing for (i, j) and (j, i) (forward pass)
            let (list, sym) = (self.edge_list(l), l == 0);
            let ne = c * list.len();
            let o = self.node_offsets(l, m);
            let hl = &nodes[o.h..][..m * h];
            let xl = &nodes[o.x..][..m * d];
            let p = &nodes[o.p..][..m * h];
            let q = &nodes[o.q..][..m * h];
            let agg = &nodes[o.agg..][..m * h];
            let zn1 = &nodes[o.zn1..][..m * h];
            // this layer's edge activations: read in place from the cache, or recomputed
            let block = match edges {
                Some(ec) => &ec[c * self.edge_rows_before(l) * pe..][..ne * pe],
                None => {
                    let mut ea = EdgeAct::split(&mut scr.edge[..ne * pe], ne, h, d);
                    self.edges_forward(th, &lo, c, list, xl, p, q, &scr.attr, &mut ea, true);
                    &scr.edge[..ne * pe]
                }
            };
            let ev = EdgeAct::split(block, ne, h, d);
            let ghs = &gh[..m * h];
            let ghn = &mut gh_new[..m * h];
            let gxs = &gx[..m * d];
            // node MLP (skipped in the last layer, whose node update the output does not use:
            // the gradient reaching it is zero)
            let gagg = &mut scr.gagg[..m * h];
            // layer 0: h⁰ is one row per configuration (see the forward pass), so its products
            // take per-configuration sums of their gradients, and the gradient for h⁰ is kept
            // per configuration in ghn[..c·h] (all the embedding needs)
            let first = l == 0;
            if first {
                config_sums(ghs, n, h, &mut ghn[..c * h]);
            }
            if l + 1 == self.dims.layers {
                if !first {
                    ghn.fill(0.0);
                }
                gagg.fill(0.0);
            } else {
                let u = &mut scr.u[..m * h];
                let dzn = &mut scr.dzn[..m * h];
                dzn.copy_from_slice(zn1);
                silu_keep_grad(dzn, u);
                gemm_tn(h, h, m, ghs, h, u, h, &mut acc[lo.wn2..], h, true);
                add_col_sums(ghs, &mut acc[lo.bn2..][..h]);
                let gz = &mut scr.gnode[..m * h];
                gemm_nn(m, h, h, ghs, h, &th[lo.wn2..], h, gz, h, false);
                mul_assign(gz, dzn);
                if first {
                    let gzs = &mut scr.gsum[..c * h];
                    config_sums(gz, n, h, gzs);
                    gemm_tn(h, h, c, gzs, h, hl, n * h, &mut acc[lo.wn1..], 2 * h, true);
                    gemm_nn(c, h, h, gzs, h, &th[lo.wn1..], 2 * h, ghn, h, true);
                } else {
                    gemm_tn(h, h, m, gz, h, hl, h, &mut acc[lo.wn1..], 2 * h, true);
                    ghn.copy_from_slice(ghs);
                    gemm_nn(m, h, h, gz, h, &th[lo.wn1..], 2 * h, ghn, h, true);
                }
                gemm_tn(h, h, m, gz, h, agg, h, &mut acc[lo.wn1 + h..], 2 * h, true);
                add_col_sums(gz, &mut acc[lo.bn1..][..h]);
                gemm_nn(m, h, h, gz, h, &th[lo.wn1 + h..], 2 * h, gagg, h, false);
            }
            // coordinate update: x_new_i = x_i + Σ_j u_e·c′_e (a pair's row: x_i += u·c′,
            // x_j −= u·c′, so its u and c′ see the gradient g_i − g_j)
            let gxn = &mut gx_new[..m * d];
            gxn.copy_from_slice(gxs);
            let wc2 = &th[lo.wc2..][..h];
            {
                let gc1 = &mut scr.ga[..ne * h];
                for ci in 0..c {
                    for (k, &(i, j)) in list.iter().enumerate() {
                        let e = ci * list.len() + k;
                        let (vi, vj) = (ci * n + i, ci * n + j);
                        let u = &ev.unit[e * d..][..d];
                        let cp = ev.cp[e];
                        let gu = &mut scr.gunit[e * d..][..d];
                        for a in 0..d {
                            gu[a] = gxs[vi * d + a] - if sym { gxs[vj * d + a] } else { 0.0 };
                        }
                        let gcp: f32 = gu.iter().zip(u).map(|(g, u)| g * u).sum();
                        for g in gu.iter_mut() {
                            *g *= cp;
                        }
                        let gcv = if self.dims.tanh {
                            let tv = cp / self.dims.range;
                            gcp * self.dims.range * (1.0 - tv * tv)
                        } else {
                            gcp
                        };
                        axpy(gcv, &ev.c1[e * h..][..h], &mut acc[lo.wc2..][..h]);
                        // gz_c1 = gcv·w_c2·SiLU′(z_c1), and its column sums (b_c1)
                        let row = &mut gc1[e * h..][..h];
                        let zg = &ev.zc1[e * h..][..h];
                        for ((g, &w), &z) in row.iter_mut().zip(wc2).zip(zg) {
                            *g = gcv * w * z;
                        }
                        add_row(row, &mut acc[lo.bc1..][..h]);
                    }
                }
                gemm_tn(h, h, ne, gc1, h, ev.m, h, &mut acc[lo.wc1..], h, true);
            }
            // gm = gz_c1·W_c1 + gagg_i (+ gagg_j for a pair); then, row by row, the attention
            // gate m = g·m⁰, g = σ(m⁰·w_att + b_att), and m⁰ = SiLU(z2): gz2 = gm⁰·SiLU′(z2)
            let gc1 = &scr.ga[..ne * h];
            let gm = &mut scr.gb[..ne * h];
            gemm_nn(ne, h, h, gc1, h, &th[lo.wc1..], h, gm, h, false);
            let watt: &[f32] = if self.dims.attention {
                &th[lo.w_att..][..h]
            } else {
                &[]
            };
            let mut gb_att = 0.0f32;
            for ci in 0..c {
                for (k, &(i, j)) in list.iter().enumerate() {
                    let e = ci * list.len() + k;
                    let row = &mut gm[e * h..][..h];
                    add_row(&gagg[(ci * n + i) * h..][..h], row);
                    if sym {
                        add_row(&gagg[(ci * n + j) * h..][..h], row);
                    }
                    let zg = &ev.z2[e * h..][..h];
                    if self.dims.attention {
                        let m0 = &ev.m0[e * h..][..h];
                        let g = ev.gate[e];
                        let gza = dot_f32(row, m0) * g * (1.0 - g);
                        gb_att += gza;
                        axpy(gza, m0, &mut acc[lo.w_att..][..h]);
                        for ((r, &w), &z) in row.iter_mut().zip(watt).zip(zg) {
                            *r = (*r * g + gza * w) * z;
                        }
                    } else {
                        for (r, &z) in row.iter_mut().zip(zg) {
                            *r *= z;
                        }
                    }
                    add_row(row, &mut acc[lo.b2..][..h]);
                }
            }
            if self.dims.attention {
                acc[lo.b_att] += gb_att;
            }
            // z2 = s·W₂ᵀ + b₂, s = SiLU(pre): gpre = (gz2·W₂)·SiLU′(pre), row by row below
            gemm_tn(h, h, ne, gm, h, ev.s1, h, &mut acc[lo.w2..], h, true);
            let gs = &mut scr.ga[..ne * h];
            gemm_nn(ne, h, h, gm, h, &th[lo.w2..], h, gs, h, false);
            // pre = P_i + Q_j + r·w_r + a·w_a + b₁
            let (wr, wa) = (&th[lo.w_r..][..h], &th[lo.w_a..][..h]);
            let gp = &mut scr.gp[..m * h];
            let gq = &mut scr.gq[..m * h];
            gp.fill(0.0);
            gq.fill(0.0);
            // (a pair's row: P_i + Q_j = P_j + Q_i in layer 0, so adding its gradient to P_i and
            // Q_j gives the per-configuration sums below; its attribute gradient goes to the
            // ordered edge (i, j), which the input chain at the end treats like (i, j) + (j, i))
            let mut e = 0;
            for ci in 0..c {
                for &(i, j) in list {
                    let (vi, vj) = (ci * n + i, ci * n + j);
                    let ae = self.ordered_edge(ci, i, j);
                    let row = &mut gs[e * h..][..h];
                    for (g, &z) in row.iter_mut().zip(&ev.pre[e * h..][..h]) {
                        *g *= z;
                    }
                    add_row(row, &mut acc[lo.b1..][..h]);
                    let row = &*row;
                    axpy(ev.r[e], row, &mut acc[lo.w_r..][..h]);
                    axpy(scr.attr[ae], row, &mut acc[lo.w_a..][..h]);
                    let gr = dot_f32(row, wr);
                    scr.gattr[ae] += dot_f32(row, wa);
                    for (g, &v) in gp[vi * h..][..h].iter_mut().zip(row) {
                        *g += v;
                    }
                    for (g, &v) in gq[vj * h..][..h].iter_mut().zip(row) {
                        *g += v;
                    }
                    // geometry: u = d/den, den = √(r + 1e-8) + 1, r = |d|²
                    let den = ev.den[e];
                    let s = den - 1.0;
                    let dv = &ev.diff[e * d..][..d];
                    let gu = &scr.gunit[e * d..][..d];
                    let gud: f32 = (0..d).map(|a| gu[a] * dv[a]).sum();
                    let k = gud / (den * den * s);
                    for a in 0..d {
                        let gd = gu[a] / den - k * dv[a] + 2.0 * gr * dv[a];
                        gxn[vi * d + a] += gd;
                        gxn[vj * d + a] -= gd;
                    }
                    e += 1;
                }
            }
            if first {
                let (gps, gqs) = scr.gsum[..2 * c * h].split_at_mut(c * h);
                config_sums(gp, n, h, gps);
                config_sums(gq, n, h, gqs);
                gemm_tn(h, h, c, gps, h, hl, n * h, &mut acc[lo.w_src..], h, true);
                gemm_tn(h, h, c, gqs, h, hl, n * h, &mut acc[lo.w_dst..], h, true);
                gemm_nn(c, h, h, gps, h, &th[lo.w_src..], h, ghn, h, true);
                gemm_nn(c, h, h, gqs, h, &th[lo.w_dst..], h, ghn, h, true);
            } else {
                gemm_tn(h, h, m, gp, h, hl, h, &mut acc[lo.w_src..], h, true);
                gemm_tn(h, h, m, gq, h, hl, h, &mut acc[lo.w_dst..], h, true);
                gemm_nn(m, h, h, gp, h, &th[lo.w_src..], h, ghn, h, true);
                gemm_nn(m, h, h, gq, h, &th[lo.w_dst..], h, ghn, h, true);
            }
            std::mem::swap(&mut gx, &mut gx_new);
            std::mem::swap(&mut gh, &mut gh_new);
        }
        // embedding h⁰ = t·w_emb + b_emb (gh: per configuration, summed over its particles)
        for (ci, &tv) in tc.iter().enumerate() {
            let row = &gh[ci * h..][..h];
            axpy(tv, row, &mut acc[self.emb_w..][..h]);
            for (a, &g) in acc[self.emb_b..][..h].iter_mut().zip(row) {
                *a += g;
            }
        }
        // input: the chain through x⁰ = x_0 and the edge attributes a_e = |x⁰_i − x⁰_j|²
        for (o, &v) in gx_out.iter_mut().zip(&gx[..m * d]) {
            *o += v;
        }
        let mut e = 0;
        for ci in 0..c {
            for i in 0..n {
                for j in 0..n {
                    if i == j {
                        continue;
                    }
                    let (vi, vj) = (ci * n + i, ci * n + j);
                    for a in 0..d {
                        let g = 2.0 * scr.gattr[e] * (xc[vi * d + a] - xc[vj * d + a]);
                        gx_out[vi * d + a] += g;
                        gx_out[vj * d + a] -= g;
                    }
                    e += 1;
                }
            }
        }
        scr.gx = gx;
        scr.gx_new = gx_new;
        scr.gh = gh;
        scr.gh_new = gh_new;
    }
}

/// acc += row.
#[inline(always)]
fn add_row(row: &[f32], acc: &mut [f32]) {
    for (a, &v) in acc.iter_mut().zip(row) {
        *a += v;
    }
}

/// Copy the first of every `n` rows (width `h`) of `rows` to the other `n − 1`.
fn broadcast_first(rows: &mut [f32], n: usize, h: usize) {
    for block in rows.chunks_exact_mut(n * h) {
        let (first, rest) = block.split_at_mut(h);
        for r in rest.chunks_exact_mut(h) {
            r.copy_from_slice(first);
        }
    }
}

/// out `[C, H]` = the sums of every `n` consecutive rows of `rows` `[C·n, H]`.
fn config_sums(rows: &[f32], n: usize, h: usize, out: &mut [f32]) {
    for (block, o) in rows.chunks_exact(n * h).zip(out.chunks_exact_mut(h)) {
        o.copy_from_slice(&block[..h]);
        for r in block[h..].chunks_exact(h) {
            for (a, &v) in o.iter_mut().zip(r) {
                *a += v;
            }
        }
    }
}

/// Offsets of one layer's node arrays in a chunk's node block.
struct NodeOff {
    h: usize,
    x: usize,
    p: usize,
    q: usize,
    agg: usize,
    zn1: usize,
    end: usize,
}

/// Per-thread working memory for one chunk, kept between calls (see [`with_scratch`]).
#[derive(Default)]
struct Scratch {
    /// One layer's edge activations ([`EdgeAct`]) when they are not cached.
    edge: Vec<f32>,
    // edge rows [E, H]
    ga: Vec<f32>,
    gb: Vec<f32>,
    // edge scalars and vectors
    attr: Vec<f32>,
    gattr: Vec<f32>,
    gunit: Vec<f32>,
    // node rows
    u: Vec<f32>,
    dzn: Vec<f32>,
    x_new: Vec<f32>,
    h_new: Vec<f32>,
    gx: Vec<f32>,
    gx_new: Vec<f32>,
    gh: Vec<f32>,
    gh_new: Vec<f32>,
    gnode: Vec<f32>,
    gagg: Vec<f32>,
    gp: Vec<f32>,
    gq: Vec<f32>,
    /// Per-configuration sums of layer 0's node gradients (two blocks of `[C, H]`).
    gsum: Vec<f32>,
    /// Node states of a forward pass without a cache.
    nodes: Vec<f32>,
}

impl Scratch {
    /// Grow every buffer to what a chunk of `cpc` configurations needs (contents are
    /// scratch: every use writes before it reads).
    fn ensure(&mut self, dims: &EgnnDims, cpc: usize, nodes: usize) {
        let (n, d, h) = (dims.n, dims.d, dims.h);
        let e = cpc * n * (n - 1);
        let m = cpc * n;
        let grow = |v: &mut Vec<f32>, k: usize| {
            if v.len() < k {
                v.resize(k, 0.0);
            }
        };
        grow(&mut self.edge, e * edge_floats(h, d));
        for v in [&mut self.ga, &mut self.gb] {
            grow(v, e * h);
        }
        for v in [&mut self.attr, &mut self.gattr] {
            grow(v, e);
        }
        grow(&mut self.gunit, e * d);
        for v in [&mut self.x_new, &mut self.gx, &mut self.gx_new] {
            grow(v, m * d);
        }
        for v in [
            &mut self.u,
            &mut self.dzn,
            &mut self.h_new,
            &mut self.gh,
            &mut self.gh_new,
            &mut self.gnode,
            &mut self.gagg,
            &mut self.gp,
            &mut self.gq,
        ] {
            grow(v, m * h);
        }
        grow(&mut self.gsum, 2 * cpc * h);
        grow(&mut self.nodes, nodes);
    }
}

/// One layer's edge activations over the `ne` edges of a chunk, as written by `edges_forward`
/// (with `keep_grad`, `pre`, `z2` and `zc1` hold SiLU′ of themselves) and read by the backward
/// pass; `S` is `&mut [f32]` while they are written, `&[f32]` while they are read. They live in a
/// block of `ne · per_edge` floats — a layer of the edge cache, or the scratch — holding these
/// fields in this order, each contiguous over the chunk's edges ([`EdgeAct::split`]).
struct EdgeAct<S> {
    pre: S,
    s1: S,
    z2: S,
    m0: S,
    m: S,
    zc1: S,
    c1: S,
    gate: S,
    cp: S,
    r: S,
    den: S,
    diff: S,
    unit: S,
}

/// Floats per edge of one layer's [`EdgeAct`] block.
fn edge_floats(h: usize, d: usize) -> usize {
    7 * h + 4 + 2 * d
}

/// A slice, shared or mutable, that can be cut in two.
trait Cut: Sized + Default {
    fn cut(self, at: usize) -> (Self, Self);
    fn is_empty(&self) -> bool;
}

impl Cut for &[f32] {
    fn cut(self, at: usize) -> (Self, Self) {
        self.split_at(at)
    }
    fn is_empty(&self) -> bool {
        <[f32]>::is_empty(self)
    }
}

impl Cut for &mut [f32] {
    fn cut(self, at: usize) -> (Self, Self) {
        self.split_at_mut(at)
    }
    fn is_empty(&self) -> bool {
        <[f32]>::is_empty(self)
    }
}

impl<S: Cut> EdgeAct<S> {
    /// The fields of a block of exactly `ne · per_edge` floats (`H` per edge for the seven
    /// row fields, 1 for gate, c′, r and den, `d` for the difference and unit vectors).
    fn split(block: S, ne: usize, h: usize, d: usize) -> Self {
        let mut rest = block;
        let mut take = |w: usize| {
            let (a, b) = std::mem::take(&mut rest).cut(ne * w);
            rest = b;
            a
        };
        let fields = EdgeAct {
            pre: take(h),
            s1: take(h),
            z2: take(h),
            m0: take(h),
            m: take(h),
            zc1: take(h),
            c1: take(h),
            gate: take(1),
            cp: take(1),
            r: take(1),
            den: take(1),
            diff: take(d),
            unit: take(d),
        };
        assert!(
            rest.is_empty(),
            "an edge-activation block has the wrong length"
        );
        fields
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Run `f` with this thread's scratch, grown for chunks of `cpc` configurations and a node
/// block of `nodes` floats. Buffers are reused across calls: no allocation or zeroing per call.
fn with_scratch<R>(
    dims: &EgnnDims,
    cpc: usize,
    nodes: usize,
    f: impl FnOnce(&mut Scratch) -> R,
) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        s.ensure(dims, cpc, nodes);
        f(&mut s)
    })
}
