//! Property tests: particle targets are invariant under rotation/reflection, translation and
//! permutation of particles (log p unchanged, gradient transformed accordingly).

use idem::Target;
use proptest::prelude::*;

/// Apply x ↦ R·x + shift to every particle, then permute particles.
fn transform(x: &[f64], d: usize, rot: &[f64], shift: &[f64], perm: &[usize]) -> Vec<f64> {
    let n = x.len() / d;
    let mut out = vec![0.0; x.len()];
    for (dst, &src) in perm.iter().enumerate().take(n) {
        for a in 0..d {
            out[dst * d + a] =
                (0..d).map(|b| rot[a * d + b] * x[src * d + b]).sum::<f64>() + shift[a];
        }
    }
    out
}

/// An orthogonal matrix from angles (2-D: rotation or reflection; 3-D: Euler angles, optional reflection).
fn orthogonal(d: usize, ang: &[f64], reflect: bool) -> Vec<f64> {
    let s = if reflect { -1.0 } else { 1.0 };
    if d == 2 {
        let (c, sn) = (ang[0].cos(), ang[0].sin());
        vec![c, -sn, s * sn, s * c]
    } else {
        let (a, b, g) = (ang[0], ang[1], ang[2]);
        let rz = |t: f64| [t.cos(), -t.sin(), 0.0, t.sin(), t.cos(), 0.0, 0.0, 0.0, 1.0];
        let rx = |t: f64| [1.0, 0.0, 0.0, 0.0, t.cos(), -t.sin(), 0.0, t.sin(), t.cos()];
        let mul = |p: [f64; 9], q: [f64; 9]| {
            let mut r = [0.0; 9];
            for i in 0..3 {
                for j in 0..3 {
                    r[i * 3 + j] = (0..3).map(|k| p[i * 3 + k] * q[k * 3 + j]).sum();
                }
            }
            r
        };
        let mut m = mul(mul(rz(a), rx(b)), rz(g)).to_vec();
        for v in &mut m[6..9] {
            *v *= s;
        }
        m
    }
}

/// A pseudo-random permutation of 0..n (Fisher–Yates on an LCG).
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..n).collect();
    let mut s = seed;
    for i in (1..n).rev() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        perm.swap(i, (s >> 33) as usize % (i + 1));
    }
    perm
}

fn check(name: &str, x: Vec<f64>, ang: Vec<f64>, shift: Vec<f64>, reflect: bool, perm_seed: u64) {
    let t = Target::by_name(name).unwrap();
    let p = t.particles().unwrap();
    let (n, d) = (p.n_particles, p.spatial_dim);
    let perm = permutation(n, perm_seed);
    let rot = orthogonal(d, &ang, reflect);
    let y = transform(&x, d, &rot, &shift[..d], &perm);
    let e = t.kernel().expect("a built-in kernel");
    let (mut gx, mut gy) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    let lx = e.log_prob_grad(&x, &mut gx);
    let ly = e.log_prob_grad(&y, &mut gy);
    assert!(
        (lx - ly).abs() <= 1e-9 * lx.abs().max(1.0),
        "{name}: log p {lx} vs {ly}"
    );
    // gradient is equivariant: ∇log p(y) = R·∇log p(x), permuted (no shift)
    let zero = vec![0.0; d];
    let gx_t = transform(&gx, d, &rot, &zero, &perm);
    let scale = gx.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (a, b) in gx_t.iter().zip(&gy) {
        assert!((a - b).abs() <= 1e-8 * scale, "{name}: gradient {a} vs {b}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn dw4_is_invariant(x in prop::collection::vec(-4.0f64..4.0, 8), a in -3.2f64..3.2,
                        shift in prop::collection::vec(-5.0f64..5.0, 2), reflect: bool, perm in any::<u64>()) {
        check("dw4", x, vec![a], shift, reflect, perm);
    }

    #[test]
    fn lj13_is_invariant(jitter in prop::collection::vec(-0.15f64..0.15, 39), ang in prop::collection::vec(-3.2f64..3.2, 3),
                         shift in prop::collection::vec(-5.0f64..5.0, 3), reflect: bool, perm in any::<u64>()) {
        // a jittered lattice keeps particles apart, where the energy is well conditioned
        let x: Vec<f64> = (0..39).map(|i| ((i / 3) as f64 / 3f64.powi((i % 3) as i32)).floor() % 3.0 * 1.1 + jitter[i]).collect();
        check("lj13", x, ang, shift, reflect, perm);
    }
}

/// The EGNN score network is equivariant: f(P·(R·x + s), t) = P·R·f(x, t) to 1e-4 (relative to
/// the output's scale), and its output is mean-free. The coordinate heads get larger weights than
/// their 0.001-gain initialisation so that the check is not trivially passed by a tiny output.
#[allow(clippy::too_many_arguments)]
fn check_egnn(
    n: usize,
    d: usize,
    x: Vec<f64>,
    ang: Vec<f64>,
    shift: Vec<f64>,
    reflect: bool,
    perm_seed: u64,
    t: f32,
) {
    use candle_core::{Device, Tensor};
    use idem::net::{Egnn, EgnnConfig, Params, ScoreNet};
    let dev = Device::Cpu;
    let mut params = Params::new(&dev);
    // H = 64, the width of the CPU presets: on AVX-512 CPUs the products run on the tile kernels
    let cfg = EgnnConfig {
        hidden: 64,
        layers: 3,
        ..EgnnConfig::default()
    };
    let net = Egnn::new(&mut params, n, d, &cfg, &mut idem::rng::stream(1, 2)).unwrap();
    for (name, var) in params.vars() {
        if name.ends_with("coord2.weight") {
            let k = var.elem_count();
            let w: Vec<f32> = (0..k)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.05)
                .collect();
            var.set(&Tensor::from_vec(w, var.dims(), &dev).unwrap())
                .unwrap();
        }
    }
    let perm = permutation(n, perm_seed);
    let rot = orthogonal(d, &ang, reflect);
    let y = transform(&x, d, &rot, &shift[..d], &perm);
    let run = |v: &[f64]| -> Vec<f64> {
        let xs = Tensor::from_vec(
            v.iter().map(|&a| a as f32).collect::<Vec<_>>(),
            (1, n * d),
            &dev,
        )
        .unwrap();
        let ts = Tensor::from_vec(vec![t], 1, &dev).unwrap();
        net.forward(&xs, &ts)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    };
    let (fx, fy) = (run(&x), run(&y));
    let scale = fx.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 1e-3, "output too small to test: {scale}");
    let zero = vec![0.0; d];
    let fx_t = transform(&fx, d, &rot, &zero, &perm);
    for (a, b) in fx_t.iter().zip(&fy) {
        assert!(
            (a - b).abs() <= 1e-4 * scale,
            "EGNN {n}x{d}: {a} vs {b} (scale {scale})"
        );
    }
    for k in 0..d {
        let mean: f64 = (0..n).map(|i| fy[i * d + k]).sum::<f64>() / n as f64;
        assert!(mean.abs() <= 1e-5 * scale, "output not mean-free: {mean}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn egnn_is_equivariant_in_2d(x in prop::collection::vec(-3.0f64..3.0, 8), a in -3.2f64..3.2,
                                 shift in prop::collection::vec(-5.0f64..5.0, 2), reflect: bool,
                                 perm in any::<u64>(), t in 0.0f32..1.0) {
        check_egnn(4, 2, x, vec![a], shift, reflect, perm, t);
    }

    #[test]
    fn egnn_is_equivariant_in_3d(x in prop::collection::vec(-2.0f64..2.0, 39), ang in prop::collection::vec(-3.2f64..3.2, 3),
                                 shift in prop::collection::vec(-5.0f64..5.0, 3), reflect: bool,
                                 perm in any::<u64>(), t in 0.0f32..1.0) {
        check_egnn(13, 3, x, ang, shift, reflect, perm, t);
    }
}
