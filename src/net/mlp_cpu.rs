//! The MLP of [`super::mlp`] as fused CPU kernels (see [`super::fused`]): sinusoidal
//! embeddings, the input layer, residual GELU blocks and the output layer over a flat θ, forward
//! and analytic backward, multi-threaded over chunks of rows.
//!
//! θ layout (PyTorch, weights `[out, in]`): input weight and bias, each block's weight and bias,
//! output weight and bias — the order of [`MlpCpu::param_specs`]. The forward pass caches, per
//! row, the embedding and every layer's pre-activation and output (`E_in + 2H(L+1)` floats);
//! nothing is recomputed. Chunk gradients are summed over [`GROUPS`] fixed groups, so results do
//! not depend on the thread count.

use rayon::prelude::*;

use super::dense::{add_col_sums, bias_gelu, gelu_grad_mul, gemm_nn, gemm_nt, gemm_tn};
use super::fused::FusedKernel;

/// Contiguous chunk groups whose gradients are summed in a fixed order.
pub const GROUPS: usize = 4;
/// Rows per chunk.
const CHUNK_ROWS: usize = 64;

/// Shape of the MLP.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MlpDims {
    /// Input (and output) dimension.
    pub dim: usize,
    pub hidden: usize,
    /// Residual blocks.
    pub layers: usize,
    /// Size of each sinusoidal embedding (even).
    pub emb: usize,
    pub x_scale: f32,
    pub t_scale: f32,
}

/// The fused MLP.
#[derive(Clone, Debug)]
pub struct MlpCpu {
    dims: MlpDims,
    freqs: Vec<f32>,
    specs: Vec<(String, Vec<usize>)>,
    /// (weight, bias) offsets: input, blocks…, output.
    layers: Vec<(usize, usize)>,
    total: usize,
}

impl MlpCpu {
    /// The kernels for `dims`; `freqs` are the embedding frequencies f_k (`emb / 2` of them).
    pub fn new(dims: MlpDims, freqs: Vec<f32>) -> Self {
        assert_eq!(freqs.len(), dims.emb / 2);
        let n_in = (dims.dim + 1) * dims.emb;
        let h = dims.hidden;
        let mut shapes = vec![("mlp.input".to_string(), h, n_in)];
        for i in 0..dims.layers {
            shapes.push((format!("mlp.block{i}"), h, h));
        }
        shapes.push(("mlp.output".to_string(), dims.dim, h));
        let mut specs = Vec::new();
        let mut layers = Vec::new();
        let mut off = 0;
        for (name, out, inp) in shapes {
            specs.push((format!("{name}.weight"), vec![out, inp]));
            specs.push((format!("{name}.bias"), vec![out]));
            layers.push((off, off + out * inp));
            off += out * inp + out;
        }
        Self {
            dims,
            freqs,
            specs,
            layers,
            total: off,
        }
    }

    /// Parameter names and shapes in θ order.
    pub fn param_specs(&self) -> &[(String, Vec<usize>)] {
        &self.specs
    }

    /// Length of θ.
    pub fn param_count(&self) -> usize {
        self.total
    }

    fn n_in(&self) -> usize {
        (self.dims.dim + 1) * self.dims.emb
    }

    /// Cache floats per row.
    fn per_row(&self) -> usize {
        self.n_in() + 2 * self.dims.hidden * (self.dims.layers + 1)
    }

    /// Sinusoidal embedding of one scalar into `out` (`emb` floats: sines then cosines).
    fn embed(&self, v: f32, scale: f32, out: &mut [f32]) {
        let half = self.dims.emb / 2;
        for (k, &f) in self.freqs.iter().enumerate() {
            let (s, c) = (scale * v * f).sin_cos();
            out[k] = s;
            out[half + k] = c;
        }
    }

    fn forward_chunk(&self, th: &[f32], x: &[f32], t: &[f32], out: &mut [f32], cache: &mut [f32]) {
        let MlpDims {
            dim,
            hidden: h,
            layers,
            emb,
            ..
        } = self.dims;
        let rows = t.len();
        let n_in = self.n_in();
        let (embs, rest) = cache.split_at_mut(rows * n_in);
        for r in 0..rows {
            let row = &mut embs[r * n_in..][..n_in];
            for c in 0..dim {
                self.embed(
                    x[r * dim + c],
                    self.dims.x_scale,
                    &mut row[c * emb..][..emb],
                );
            }
            self.embed(t[r], self.dims.t_scale, &mut row[dim * emb..][..emb]);
        }
        // layer l: z_l at rest[2l·rows·h], h_l after it
        let (w, b) = self.layers[0];
        let (z0, rest2) = rest.split_at_mut(rows * h);
        gemm_nt(rows, h, n_in, embs, n_in, &th[w..], n_in, z0, h, false);
        bias_gelu(z0, &th[b..][..h], &mut rest2[..rows * h]);
        for l in 1..=layers {
            let (prev, next) = rest.split_at_mut(2 * l * rows * h);
            let hp = &prev[(2 * l - 1) * rows * h..];
            let (z, hn) = next.split_at_mut(rows * h);
            let (w, b) = self.layers[l];
            gemm_nt(rows, h, h, hp, h, &th[w..], h, z, h, false);
            let hn = &mut hn[..rows * h];
            bias_gelu(z, &th[b..][..h], hn);
            for (a, &p) in hn.iter_mut().zip(hp) {
                *a += p;
            }
        }
        let hl = &rest[(2 * layers + 1) * rows * h..][..rows * h];
        let (w, b) = self.layers[layers + 1];
        gemm_nt(rows, dim, h, hl, h, &th[w..], h, out, dim, false);
        for row in out.chunks_exact_mut(dim) {
            for (o, &bb) in row.iter_mut().zip(&th[b..][..dim]) {
                *o += bb;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn backward_chunk(
        &self,
        th: &[f32],
        cache: &[f32],
        gout: &[f32],
        acc: &mut [f32],
        gx: Option<&mut [f32]>,
        scr: &mut Vec<f32>,
    ) {
        let MlpDims {
            dim,
            hidden: h,
            layers,
            emb,
            ..
        } = self.dims;
        let rows = gout.len() / dim;
        let n_in = self.n_in();
        let (embs, rest) = cache.split_at(rows * n_in);
        let z = |l: usize| &rest[2 * l * rows * h..][..rows * h];
        let hs = |l: usize| &rest[(2 * l + 1) * rows * h..][..rows * h];
        scr.resize(3 * rows * h + rows * n_in, 0.0);
        let (gh, r2) = scr.split_at_mut(rows * h);
        let (gz, r3) = r2.split_at_mut(rows * h);
        let (_, gemb) = r3.split_at_mut(rows * h);
        // output layer
        let (w, b) = self.layers[layers + 1];
        gemm_tn(
            dim,
            h,
            rows,
            gout,
            dim,
            hs(layers),
            h,
            &mut acc[w..],
            h,
            true,
        );
        add_col_sums(gout, &mut acc[b..][..dim]);
        gemm_nn(rows, h, dim, gout, dim, &th[w..], h, gh, h, false);
        // residual blocks: h_l = h_{l−1} + GELU(z_l)
        for l in (1..=layers).rev() {
            let (w, b) = self.layers[l];
            gelu_grad_mul(gh, z(l), gz);
            gemm_tn(h, h, rows, gz, h, hs(l - 1), h, &mut acc[w..], h, true);
            add_col_sums(gz, &mut acc[b..][..h]);
            gemm_nn(rows, h, h, gz, h, &th[w..], h, gh, h, true);
        }
        // input layer
        let (w, b) = self.layers[0];
        gelu_grad_mul(gh, z(0), gz);
        gemm_tn(h, n_in, rows, gz, h, embs, n_in, &mut acc[w..], n_in, true);
        add_col_sums(gz, &mut acc[b..][..h]);
        if let Some(gx) = gx {
            // d/dv [sin(s·v·f), cos(s·v·f)] = s·f·[cos, −sin]
            let gemb = &mut gemb[..rows * n_in];
            gemm_nn(rows, n_in, h, gz, h, &th[w..], n_in, gemb, n_in, false);
            let half = emb / 2;
            let s = self.dims.x_scale;
            for r in 0..rows {
                for c in 0..dim {
                    let e = &embs[r * n_in + c * emb..][..emb];
                    let g = &gemb[r * n_in + c * emb..][..emb];
                    let mut acc = 0.0f32;
                    for (k, &f) in self.freqs.iter().enumerate() {
                        acc += s * f * (g[k] * e[half + k] - g[half + k] * e[k]);
                    }
                    gx[r * dim + c] = acc;
                }
            }
        }
    }
}

impl FusedKernel for MlpCpu {
    fn name(&self) -> &'static str {
        "mlp-cpu"
    }

    fn forward(
        &self,
        theta: &[f32],
        x: &[f32],
        t: &[f32],
        out: &mut [f32],
        cache: Option<&mut Vec<f32>>,
    ) {
        let dim = self.dims.dim;
        assert_eq!(theta.len(), self.total, "θ has the wrong length");
        assert_eq!(
            x.len(),
            t.len() * dim,
            "x must be [B, dim] with B = t.len()"
        );
        assert_eq!(out.len(), x.len());
        let pr = self.per_row();
        match cache {
            Some(cache) => {
                cache.clear();
                cache.resize(t.len() * pr, 0.0);
                out.par_chunks_mut(CHUNK_ROWS * dim)
                    .zip(cache.par_chunks_mut(CHUNK_ROWS * pr))
                    .zip(x.par_chunks(CHUNK_ROWS * dim))
                    .zip(t.par_chunks(CHUNK_ROWS))
                    .for_each(|(((o, c), xc), tc)| self.forward_chunk(theta, xc, tc, o, c));
            }
            None => {
                out.par_chunks_mut(CHUNK_ROWS * dim)
                    .zip(x.par_chunks(CHUNK_ROWS * dim))
                    .zip(t.par_chunks(CHUNK_ROWS))
                    .for_each_init(
                        || vec![0.0f32; CHUNK_ROWS * pr],
                        |c, ((o, xc), tc)| {
                            self.forward_chunk(theta, xc, tc, o, &mut c[..tc.len() * pr])
                        },
                    );
            }
        }
    }

    fn backward(
        &self,
        theta: &[f32],
        _x: &[f32],
        t: &[f32],
        cache: &[f32],
        gout: &[f32],
        gtheta: &mut [f32],
        gx: Option<&mut [f32]>,
    ) {
        let dim = self.dims.dim;
        let b = t.len();
        let pr = self.per_row();
        assert_eq!(cache.len(), b * pr, "cache does not match the batch");
        assert_eq!(gout.len(), b * dim);
        assert_eq!(gtheta.len(), self.total);
        if b == 0 {
            return;
        }
        let chunks = b.div_ceil(CHUNK_ROWS);
        let span = chunks.div_ceil(GROUPS) * CHUNK_ROWS;
        let groups = b.div_ceil(span);
        let gx_parts: Vec<Option<&mut [f32]>> = match gx {
            Some(g) => g.chunks_mut(span * dim).map(Some).collect(),
            None => (0..groups).map(|_| None).collect(),
        };
        let partial: Vec<Vec<f32>> = gx_parts
            .into_par_iter()
            .enumerate()
            .map(|(g, mut gxg)| {
                let mut acc = vec![0.0f32; self.total];
                let mut scr = Vec::new();
                let (s0, e0) = (g * span, ((g + 1) * span).min(b));
                let mut s = s0;
                while s < e0 {
                    let e = (s + CHUNK_ROWS).min(e0);
                    let gxc = gxg
                        .as_deref_mut()
                        .map(|v| &mut v[(s - s0) * dim..(e - s0) * dim]);
                    self.backward_chunk(
                        theta,
                        &cache[s * pr..e * pr],
                        &gout[s * dim..e * dim],
                        &mut acc,
                        gxc,
                        &mut scr,
                    );
                    s = e;
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
