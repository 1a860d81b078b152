use std::time::Instant;
use tinylora::engine::{GenerateOptions, SamplingParams, Transformer, default_device};
use tinylora::formats::ModelFile;
fn main() {
    let file = ModelFile::open(std::path::Path::new("models/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let model = Transformer::load(&file, &default_device()).unwrap();
    let p: Vec<u32> = (0..20).map(|i| 100 + i).collect();
    for n in [1, 2, 3, 4, 5, 8, 8, 12] {
        let t = Instant::now();
        let opts = GenerateOptions { max_new_tokens: n, sampling: SamplingParams::greedy(), stop_ids: vec![] };
        model.generate(&[p.clone()], &opts, |_, _| {});
        println!("{n} tokens: {:?}", t.elapsed());
    }
}
