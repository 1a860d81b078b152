//! Custom WGSL kernels against the same math in stock burn ops, forward and backward.

use burn::tensor::{Distribution, Tensor, Tolerance};
use tinylora::engine::default_device;
use tinylora::engine::kernels::skinny_matmul;

#[test]
fn skinny_matmul_matches_burn_matmul() {
    let dev = default_device();
    // K and N include sizes that are not multiples of the 64-wide workgroup
    for (m, k, n) in [(1, 5, 1), (1, 64, 63), (3, 577, 65), (7, 33, 200), (16, 576, 130)] {
        let x = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<2>::random([k, n], Distribution::Normal(0.0, 1.0), &dev);
        let got = skinny_matmul(x.clone(), w.clone());
        got.to_data()
            .assert_approx_eq::<f32>(&x.matmul(w).to_data(), Tolerance::rel_abs(1e-4, 1e-4));
    }
}

#[test]
fn skinny_matmul_gradients_match_burn_autodiff() {
    let dev = default_device();
    let (m, k, n) = (5, 70, 90);
    let x = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &dev);
    let w = Tensor::<2>::random([k, n], Distribution::Normal(0.0, 1.0), &dev);
    let probe = Tensor::<2>::random([m, n], Distribution::Normal(0.0, 1.0), &dev).autodiff();
    let (xa, wa) = (x.clone().autodiff().require_grad(), w.clone().autodiff().require_grad());
    let g = (skinny_matmul(xa.clone(), wa.clone()) * probe.clone()).sum().backward();
    let (xr, wr) = (x.autodiff().require_grad(), w.autodiff().require_grad());
    let gr = (xr.clone().matmul(wr.clone()) * probe).sum().backward();
    let tol = Tolerance::rel_abs(1e-4, 1e-4);
    xa.grad(&g).unwrap().to_data().assert_approx_eq::<f32>(&xr.grad(&gr).unwrap().to_data(), tol);
    wa.grad(&g).unwrap().to_data().assert_approx_eq::<f32>(&wr.grad(&gr).unwrap().to_data(), tol);
}
