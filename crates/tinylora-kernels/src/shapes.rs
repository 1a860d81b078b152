//! Shape checks shared by the ops: the adapter layer validates what users give, so a mismatch
//! here is a broken internal invariant and panics with the op's name.

use burn_cubecl::tensor::CubeTensor;

use crate::launch::{MAX_RANK, dims};

/// (d_out, r, n_v) of a module with input width `d_in`: `factors` `[d_out + d_in, r]`,
/// `basis` `[n_v, r, r]`, `coef` `[n_v]`, checked against each other.
pub(crate) fn factor_dims(
    op: &str,
    d_in: usize,
    factors: &CubeTensor,
    basis: &CubeTensor,
    coef: &CubeTensor,
) -> [usize; 3] {
    let (fd, bd, cd) = (dims(factors), dims(basis), dims(coef));
    assert!(
        fd.len() == 2 && bd.len() == 3 && cd.len() == 1,
        "{op}: factors, basis, coef must be 2-, 3- and 1-D, not {fd:?} {bd:?} {cd:?}"
    );
    let (r, n_v) = (fd[1], cd[0]);
    assert!(
        (1..=MAX_RANK).contains(&r),
        "{op}: rank {r} is outside 1..={MAX_RANK}"
    );
    assert!(
        fd[0] > d_in,
        "{op}: factors {fd:?} cannot hold V [{d_in}, {r}] below U"
    );
    assert_eq!(
        &bd[..],
        &[n_v, r, r],
        "{op}: basis {bd:?} does not match coef [{n_v}] and r = {r}"
    );
    [fd[0] - d_in, r, n_v]
}
