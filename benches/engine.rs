use std::time::Instant;
use burn::tensor::{Tensor, Distribution};
use tinylora::engine::{default_device, Transformer, GenerateOptions, SamplingParams};
use tinylora::formats::ModelFile;
fn main() {
    let dev = default_device();
    let file = ModelFile::open(std::path::Path::new("models/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let model = Transformer::load(&file, &dev).unwrap();
    let x = Tensor::<3>::random([1, 1, 576], Distribution::Default, &dev);
    for _ in 0..3 {
        let t = Instant::now();
        let mut y = x.clone();
        for l in &model.layers {
            let a = &l.self_attn;
            y = y.clone() + a.o_proj.forward(a.q_proj.forward(y.clone())) + a.k_proj.forward(y.clone()).narrow(2,0,1) + a.v_proj.forward(y.clone()).narrow(2,0,1);
            y = y.clone() + l.mlp.down_proj.forward(l.mlp.gate_proj.forward(y.clone()) * l.mlp.up_proj.forward(y));
        }
        let _ = model.logits(y.reshape([1, 576])).into_data();
        println!("linears only: {:?}", t.elapsed());
    }
    let p: Vec<u32> = (0..20).map(|i| 100 + i).collect();
    for n in [1, 11, 1, 11] {
        let t = Instant::now();
        let opts = GenerateOptions { max_new_tokens: n, sampling: SamplingParams::greedy(), stop_ids: vec![] };
        model.generate(&[p.clone()], &opts, |_, _| {});
        println!("{n} tokens: {:?}", t.elapsed());
    }
}
