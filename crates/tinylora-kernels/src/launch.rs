//! Launching a `.wgsl` template from `shaders/` on burn's cube backend.

use burn::tensor::{DType, Shape};
use burn_cubecl::{
    kernel::into_contiguous,
    template::{KernelSource, SourceKernel, SourceTemplate},
    tensor::CubeTensor,
};
use cubecl::{CubeCount, CubeDim, prelude::KernelId, server::KernelArguments};

/// Largest frozen rank r the kernels are compiled for (private arrays of r numbers).
pub const MAX_RANK: usize = 16;

/// Invocations per workgroup (a power of two: the reductions halve it).
pub(crate) const WG: u32 = 64;

/// Most workgroups along one grid dimension (WebGPU's guaranteed minimum).
const MAX_GRID_X: u32 = 65535;

/// A WGSL file with its template values; the values are part of the compilation cache key.
#[derive(Debug)]
pub(crate) struct Wgsl {
    /// The file's text (`include_str!`).
    pub source: &'static str,
    /// `{{ name }}` → value.
    pub values: Vec<(&'static str, String)>,
}

impl KernelSource for Wgsl {
    fn source(&self) -> SourceTemplate {
        self.values
            .iter()
            .fold(SourceTemplate::new(self.source), |t, (k, v)| {
                t.register(*k, v.clone())
            })
    }
    fn id(&self) -> KernelId {
        // the source text keys the kernel too, so two files with equal values never collide
        KernelId::new::<Self>().info((self.source, self.values.clone()))
    }
    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Template values every kernel takes: R, WG and R².
pub(crate) fn rank_values(r: usize) -> Vec<(&'static str, String)> {
    vec![
        ("r", r.to_string()),
        ("r_r", (r * r).to_string()),
        ("wg", WG.to_string()),
    ]
}

/// Contiguous f32 input, checked.
pub(crate) fn input(t: CubeTensor, op: &str, name: &str) -> CubeTensor {
    assert_eq!(t.dtype, DType::F32, "{op}: {name} must be f32, not {:?}", t.dtype);
    into_contiguous(t)
}

/// The dimensions of a tensor.
pub(crate) fn dims(t: &CubeTensor) -> Vec<usize> {
    t.meta.shape().to_vec()
}

/// A new contiguous f32 tensor on `like`'s device.
pub(crate) fn empty(like: &CubeTensor, shape: Vec<usize>) -> CubeTensor {
    let shape = Shape::from(shape);
    let buffer = like.client.empty(shape.num_elements() * 4);
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        buffer,
        DType::F32,
    )
}

/// Launch `kernel` over `groups` workgroups (laid out as a 2-D grid when there are more than
/// a grid row holds) with the buffers of `tensors` bound in order, then `info` as u32s.
pub(crate) fn launch(kernel: Wgsl, groups: usize, tensors: &[&CubeTensor], info: &[u32]) {
    launch_bindings(kernel, groups, tensors, info, None);
}

/// [`launch`], with `after` (if any) bound after `info`.
pub(crate) fn launch_bindings(
    kernel: Wgsl,
    groups: usize,
    tensors: &[&CubeTensor],
    info: &[u32],
    after: Option<&CubeTensor>,
) {
    let client = &tensors[0].client;
    let info = client.create_from_slice(bytemuck::cast_slice(info));
    let groups = groups.max(1) as u32;
    let (gx, gy) = if groups <= MAX_GRID_X {
        (groups, 1)
    } else {
        (MAX_GRID_X, groups.div_ceil(MAX_GRID_X))
    };
    let mut buffers: Vec<_> = tensors.iter().map(|t| t.handle.clone().binding()).collect();
    buffers.push(info.binding());
    buffers.extend(after.map(|t| t.handle.clone().binding()));
    client.launch(
        Box::new(SourceKernel::new(kernel, CubeDim::new_1d(WG))),
        CubeCount::Static(gx, gy, 1),
        KernelArguments::new().with_buffers(buffers),
    );
}
