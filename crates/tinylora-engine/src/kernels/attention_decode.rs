//! `attention_decode`: the WGSL template and its launch.

use burn::backend::autodiff::{Autodiff, checkpoint::strategy::CheckpointStrategy};
use burn::backend::tensor::FloatTensor;
use burn_cubecl::{
    CubeBackend,
    template::{KernelSource, SourceTemplate},
};
use cubecl::{CubeCount, CubeDim, prelude::KernelId};

use super::KernelBackend;
use super::launch::launch_wgsl;

const WORKGROUP: u32 = 32;

/// The template specialised for a head width.
#[derive(Debug)]
struct AttentionDecode {
    head_dim: u32,
}

impl KernelSource for AttentionDecode {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(include_str!("../../../../shaders/attention_decode.wgsl"))
            .register("wg", WORKGROUP.to_string())
            .register("head_dim", self.head_dim.to_string())
            .register("acc_len", (WORKGROUP * self.head_dim).to_string())
    }
    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.head_dim, WORKGROUP))
    }
    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

impl KernelBackend for CubeBackend {
    fn attention_decode(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        first: Vec<u32>,
        len: u32,
    ) -> FloatTensor<Self> {
        let (qs, ks) = (q.meta.shape().to_vec(), k.meta.shape().to_vec());
        let [b, n_h, d] = qs[..] else { panic!("attention_decode: q must be [B, n_h, d_h], got {qs:?}") };
        let [kb, n_kv, s, kd] = ks[..] else { panic!("attention_decode: k must be [B, n_kv, S, d_h], got {ks:?}") };
        assert!(kb == b && kd == d && n_h % n_kv == 0, "attention_decode: q {qs:?} does not fit k {ks:?}");
        assert_eq!(v.meta.shape().to_vec(), ks, "attention_decode: v and k differ in shape");
        assert!(first.len() == b && len as usize <= s, "attention_decode: bad first/len for {b} rows, {s} slots");
        assert!(first.iter().all(|&f| f < len), "attention_decode: a row has no visible slot");
        let mut info = vec![b as u32, n_h as u32, n_kv as u32, s as u32, len];
        info.extend(first);
        launch_wgsl(
            AttentionDecode { head_dim: d as u32 },
            CubeDim::new_1d(WORKGROUP),
            CubeCount::Static((b * n_h) as u32, 1, 1),
            vec![q, k, v],
            vec![b, n_h, d],
            &info,
        )
    }
}

impl<B: KernelBackend, C: CheckpointStrategy> KernelBackend for Autodiff<B, C> {
    fn attention_decode(
        _q: FloatTensor<Self>,
        _k: FloatTensor<Self>,
        _v: FloatTensor<Self>,
        _first: Vec<u32>,
        _len: u32,
    ) -> FloatTensor<Self> {
        panic!("attention_decode has no backward pass; under autodiff use the stock attention")
    }
}
