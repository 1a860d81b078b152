#!/usr/bin/env python3
"""Write data/arithmetic.jsonl: the default task of the main job.

Every single-digit addition and subtraction with a non-negative result ("What is 7 + 5?",
bare answers), shuffled with seed 0: 126 problems. With the answer prefix "The answer is",
SmolLM2-135M-Instruct gets about half of them right greedily, so GRPO groups sampled at
temperature 1 have mixed rewards: a learning signal. Run again to regenerate.
"""
import json
import random

problems = []
for a in range(1, 10):
    for b in range(1, 10):
        problems.append((f"What is {a} + {b}?", a + b))
        if a >= b:
            problems.append((f"What is {a} - {b}?", a - b))
random.Random(0).shuffle(problems)
with open("data/arithmetic.jsonl", "w") as f:
    for q, ans in problems:
        f.write(json.dumps({"question": q, "answer": str(ans)}) + "\n")
