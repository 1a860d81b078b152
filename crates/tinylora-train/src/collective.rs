//! How the processes of a data-parallel run combine their work. Each process (rank) of N takes
//! whole prompts of every step (so every group's advantages are exact), generates, scores and
//! differentiates them; the ranks then sum their shares of the gradient (13 numbers for the
//! default adapter), of the loss normalisers and of the metrics, and all take the same AdamW
//! step. One process is [`Single`], where every combination is the identity; `tinylora-mpi`
//! implements this over MPI for `mpirun`/`srun`.

use std::ops::Range;

/// The collective operations a data-parallel run needs. Every rank must call the same
/// operations in the same order (as with MPI).
pub trait Collective {
    /// This process's rank, 0..size.
    fn rank(&self) -> usize;
    /// Processes in the run.
    fn size(&self) -> usize;
    /// Element-wise sum over all ranks, in place (every rank gets the result).
    fn sum(&self, x: &mut [f64]);
    /// Element-wise maximum over all ranks, in place.
    fn max(&self, x: &mut [f64]);
    /// Rank 0's `bytes` on every rank (others' contents are replaced).
    fn broadcast(&self, bytes: &mut Vec<u8>);
}

/// One process: nothing to combine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum(&self, _: &mut [f64]) {}
    fn max(&self, _: &mut [f64]) {}
    fn broadcast(&self, _: &mut Vec<u8>) {}
}

/// The part of `n` items (prompts, held-out problems) rank `rank` of `size` takes: contiguous,
/// sizes differing by at most one, in rank order.
pub fn shard(n: usize, rank: usize, size: usize) -> Range<usize> {
    let (base, extra) = (n / size, n % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// `x` (f32) summed over all ranks, through f64.
pub fn sum_f32(c: &dyn Collective, x: &mut [f32]) {
    if c.size() > 1 {
        let mut wide: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        c.sum(&mut wide);
        x.iter_mut().zip(wide).for_each(|(v, w)| *v = w as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_everything_once_in_order() {
        for n in 0..20 {
            for size in 1..6 {
                let parts: Vec<Range<usize>> = (0..size).map(|r| shard(n, r, size)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, n);
                assert!(parts.windows(2).all(|w| w[0].end == w[1].start));
                assert!(
                    parts
                        .iter()
                        .all(|p| p.len() == n / size || p.len() == n / size + 1)
                );
            }
        }
    }
}
