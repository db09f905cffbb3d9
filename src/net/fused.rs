//! Glue between fused CPU kernels and candle: a network written as a forward pass and an
//! analytic backward pass over a flat parameter vector θ becomes one candle op,
//! (x `[B, dim]`, t `[B]`, θ `[P]`) → `[B, dim]`, whose backward hands candle the gradients for x
//! and θ (none for t). θ is the concatenation of the network's parameter tensors, so candle's
//! `cat` backward routes the gradient to each named parameter and the optimiser, EMA and
//! checkpoints see ordinary variables.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

/// Caches of finished forward passes, kept for the next training step: a DW-4 cache is 71 MB,
/// and a fresh one per step was served by the allocator straight from the OS (zeroed huge
/// pages, ~6 % of an iDEM step; about half of a PIS step, whose graph holds one cache per SDE
/// step — 100 of them). Buffers are kept while the pool holds at most [`POOL_BYTES`].
static CACHE_POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
const POOL_BYTES: usize = 4 << 30;

/// A buffer from the pool (contents stale: kernels write every element they later read).
fn pooled_cache() -> Vec<f32> {
    CACHE_POOL
        .lock()
        .map(|mut p| p.pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Give a cache back to the pool (dropped when the pool is full).
fn return_cache(cache: Vec<f32>) {
    if let Ok(mut p) = CACHE_POOL.lock() {
        let held: usize = p.iter().map(|c| c.capacity() * 4).sum();
        if held + cache.capacity() * 4 <= POOL_BYTES {
            p.push(cache);
        }
    }
}

/// A network as fused CPU kernels.
pub trait FusedKernel: Clone + Send + Sync + 'static {
    /// The op's name in candle errors.
    fn name(&self) -> &'static str;
    /// out `[B, dim]` at (x `[B, dim]`, t `[B]`); with `cache`, what `backward` needs.
    fn forward(
        &self,
        theta: &[f32],
        x: &[f32],
        t: &[f32],
        out: &mut [f32],
        cache: Option<&mut Vec<f32>>,
    );
    /// Gradients of Σ gout·out: added to `gtheta`, written to `gx` when asked for.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        theta: &[f32],
        x: &[f32],
        t: &[f32],
        cache: &[f32],
        gout: &[f32],
        gtheta: &mut [f32],
        gx: Option<&mut [f32]>,
    );
}

/// Apply `kernel` to (x, t) with parameters θ = `theta_parts` flattened and concatenated.
/// `track`: keep the forward pass's cache for a backward pass (the training network); the
/// detached generation twin passes false.
pub fn apply<K: FusedKernel>(
    kernel: &K,
    track: bool,
    x: &Tensor,
    t: &Tensor,
    theta_parts: &[Tensor],
) -> candle_core::Result<Tensor> {
    let b = x.dim(0)?;
    let x = x.contiguous()?;
    let t = t.reshape(b)?.contiguous()?;
    let flat = theta_parts
        .iter()
        .map(|p| p.flatten_all())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let theta = Tensor::cat(&flat, 0)?;
    let op = FusedOp {
        kernel: kernel.clone(),
        track,
        cache: Mutex::new(None),
    };
    x.apply_op3(&t, &theta, op)
}

struct FusedOp<K> {
    kernel: K,
    track: bool,
    /// The forward pass's cache, used by every backward pass through this op.
    cache: Mutex<Option<Vec<f32>>>,
}

/// The f32 contents of a contiguous CPU storage.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("fused network kernels take f32 tensors")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("fused network kernels take contiguous tensors")
    };
    Ok(&v[a..b])
}

impl<K> Drop for FusedOp<K> {
    fn drop(&mut self) {
        if let Some(c) = self.cache.get_mut().ok().and_then(Option::take) {
            return_cache(c);
        }
    }
}

impl<K: FusedKernel> CustomOp3 for FusedOp<K> {
    fn name(&self) -> &'static str {
        self.kernel.name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, t, theta) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let mut out = vec![0.0f32; x.len()];
        if self.track {
            let mut cache = pooled_cache();
            self.kernel.forward(theta, x, t, &mut out, Some(&mut cache));
            *self.cache.lock().expect("kernel cache lock") = Some(cache);
        } else {
            self.kernel.forward(theta, x, t, &mut out, None);
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        t: &Tensor,
        theta: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let tv = t.flatten_all()?.to_vec1::<f32>()?;
        let th = theta.to_vec1::<f32>()?;
        let g = grad_res.flatten_all()?.to_vec1::<f32>()?;
        // the cache stays with the op: several backward passes through one forward pass (a
        // Jacobian row by row) reuse it; it goes back to the pool with the graph
        let mut guard = self.cache.lock().expect("kernel cache lock");
        if guard.is_none() {
            let mut c = pooled_cache();
            let mut out = vec![0.0f32; xv.len()];
            self.kernel.forward(&th, &xv, &tv, &mut out, Some(&mut c));
            *guard = Some(c);
        }
        let cache = guard.as_deref().expect("cache just filled");
        let mut gth = vec![0.0f32; th.len()];
        // the input's gradient only where candle tracks the input (not for training data)
        let mut gx = x.track_op().then(|| vec![0.0f32; xv.len()]);
        self.kernel
            .backward(&th, &xv, &tv, cache, &g, &mut gth, gx.as_deref_mut());
        drop(guard);
        let gx = gx
            .map(|v| Tensor::from_vec(v, x.shape(), x.device()))
            .transpose()?;
        Ok((
            gx,
            None,
            Some(Tensor::from_vec(gth, theta.shape(), theta.device())?),
        ))
    }
}
