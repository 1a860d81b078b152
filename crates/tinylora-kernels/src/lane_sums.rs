//! The host loops' dot product shape: L independent partial sums over chunks of L terms, which
//! the compiler turns into vector registers (and, with L a few vectors wide, into enough
//! independent chains to hide the additions' latency). Callers combine the partial sums in the
//! precision they need.

use std::iter::Sum;
use std::ops::{Add, Mul};

/// The L partial sums of Σ a_t b_t over whole chunks of L terms, and the sum of the tail
/// (the last `len % L` terms), for slices of equal length.
#[inline(always)]
pub fn lane_sums<T, const L: usize>(a: &[T], b: &[T]) -> ([T; L], T)
where
    T: Copy + Default + Add<Output = T> + Mul<Output = T> + Sum,
{
    let mut acc = [T::default(); L];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: T = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(&x, &y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..L {
            acc[l] = acc[l] + x[l] * y[l];
        }
    }
    (acc, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_sums_add_up_to_the_dot_product() {
        let a: Vec<f64> = (0..37).map(|i| i as f64 * 0.5 - 3.0).collect();
        let b: Vec<f64> = (0..37).map(|i| (i % 5) as f64 - 1.5).collect();
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let (acc, tail) = lane_sums::<f64, 8>(&a, &b);
        assert_eq!(acc.iter().sum::<f64>() + tail, exact);
        assert_eq!(tail, (32..37).map(|t| a[t] * b[t]).sum::<f64>());
        assert_eq!(acc[3], (0..4).map(|c| a[c * 8 + 3] * b[c * 8 + 3]).sum::<f64>());
    }
}
