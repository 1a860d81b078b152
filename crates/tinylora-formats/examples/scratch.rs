use tinylora_formats::*;
fn main() {
    let p = std::env::args().nth(1).unwrap();
    let m = ModelFile::open(std::path::Path::new(&p)).unwrap();
    let q = std::fs::read_to_string("../shared/data/gsm8k/test.jsonl").unwrap();
    let q: serde_json::Value = serde_json::from_str(q.lines().next().unwrap()).unwrap();
    let t = m.chat_template.as_ref().unwrap();
    let texts = vec![
        t.render(&[ChatMessage::new("user", q["question"].as_str().unwrap())], true)
            .unwrap(),
        "The capital of France is Paris. The capital of Germany is".to_string(),
        "def fibonacci(n):\n    if n < 2:\n        return n\n".to_string(),
        t.render(&[ChatMessage::new("user", "What is 12+7?")], true)
            .unwrap(),
    ];
    let ids: Vec<Vec<u32>> = texts.iter().map(|s| m.tokenizer.encode(s).unwrap()).collect();
    println!("{}", serde_json::json!({"texts": texts, "prompts": ids}));
}
