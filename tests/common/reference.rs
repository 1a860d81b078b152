//! An independent, plain-Rust (f64) forward pass of the llama / qwen2 decoder, written
//! directly from the equations, for comparing logits with the GPU engine.

use tinylora::formats::ModelConfig;

use super::tiny_model::Weights;

fn matvec_t(w: &(Vec<usize>, Vec<f32>), x: &[f64]) -> Vec<f64> {
    let (rows, cols) = (w.0[0], w.0[1]);
    (0..rows)
        .map(|r| (0..cols).map(|c| w.1[r * cols + c] as f64 * x[c]).sum())
        .collect()
}

fn rms_norm(x: &[f64], g: &[f32], eps: f32) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + eps as f64).sqrt();
    x.iter().zip(g).map(|(v, &g)| v * inv * g as f64).collect()
}

fn rope(v: &mut [f64], pos: usize, theta: f32) {
    let d = v.len();
    let half = d / 2;
    for i in 0..half {
        let a = pos as f64 / (theta as f64).powf(2.0 * i as f64 / d as f64);
        let (x1, x2) = (v[i], v[i + half]);
        v[i] = x1 * a.cos() - x2 * a.sin();
        v[i + half] = x2 * a.cos() + x1 * a.sin();
    }
}

/// Logits `[T][V]` for one sequence.
pub fn reference_logits(c: &ModelConfig, w: &Weights, ids: &[u32]) -> Vec<Vec<f64>> {
    let (h, hd) = (c.hidden_size, c.head_dim);
    let (nh, nkv) = (c.num_attention_heads, c.num_key_value_heads);
    let emb = &w["model.embed_tokens.weight"];
    let mut xs: Vec<Vec<f64>> = ids
        .iter()
        .map(|&i| {
            emb.1[i as usize * h..(i as usize + 1) * h]
                .iter()
                .map(|&v| v as f64)
                .collect()
        })
        .collect();
    let bias = |name: &str, mut y: Vec<f64>| {
        if let Some((_, b)) = w.get(name) {
            y.iter_mut().zip(b).for_each(|(y, &b)| *y += b as f64);
        }
        y
    };
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let (mut qs, mut ks, mut vs) = (vec![], vec![], vec![]);
        for (t, x) in xs.iter().enumerate() {
            let n = rms_norm(x, &w[&format!("{p}.input_layernorm.weight")].1, c.rms_norm_eps);
            let mut q = bias(
                &format!("{p}.self_attn.q_proj.bias"),
                matvec_t(&w[&format!("{p}.self_attn.q_proj.weight")], &n),
            );
            let mut k = bias(
                &format!("{p}.self_attn.k_proj.bias"),
                matvec_t(&w[&format!("{p}.self_attn.k_proj.weight")], &n),
            );
            let v = bias(
                &format!("{p}.self_attn.v_proj.bias"),
                matvec_t(&w[&format!("{p}.self_attn.v_proj.weight")], &n),
            );
            q.chunks_mut(hd).for_each(|hq| rope(hq, t, c.rope_theta));
            k.chunks_mut(hd).for_each(|hk| rope(hk, t, c.rope_theta));
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        let mut new_xs = Vec::new();
        for (t, x) in xs.iter().enumerate() {
            let mut attn = vec![0.0; nh * hd];
            for head in 0..nh {
                let kvh = head / (nh / nkv);
                let q = &qs[t][head * hd..(head + 1) * hd];
                let scores: Vec<f64> = (0..=t)
                    .map(|s| {
                        q.iter()
                            .zip(&ks[s][kvh * hd..(kvh + 1) * hd])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (s, es) in e.iter().enumerate() {
                    for d in 0..hd {
                        attn[head * hd + d] += es / z * vs[s][kvh * hd + d];
                    }
                }
            }
            let o = matvec_t(&w[&format!("{p}.self_attn.o_proj.weight")], &attn);
            let x1: Vec<f64> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
            let n = rms_norm(
                &x1,
                &w[&format!("{p}.post_attention_layernorm.weight")].1,
                c.rms_norm_eps,
            );
            let g = matvec_t(&w[&format!("{p}.mlp.gate_proj.weight")], &n);
            let u = matvec_t(&w[&format!("{p}.mlp.up_proj.weight")], &n);
            let act: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let d = matvec_t(&w[&format!("{p}.mlp.down_proj.weight")], &act);
            new_xs.push(x1.iter().zip(&d).map(|(a, b)| a + b).collect());
        }
        xs = new_xs;
    }
    let head = w.get("lm_head.weight").unwrap_or(emb);
    xs.iter()
        .map(|x| matvec_t(head, &rms_norm(x, &w["model.norm.weight"].1, c.rms_norm_eps)))
        .collect()
}
