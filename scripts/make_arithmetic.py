#!/usr/bin/env python3
"""Write data/arithmetic.jsonl: the default task of the main job.

Two-number additions and subtractions with answers below 100, worded like GSM8K questions
(`{"question", "answer": "... #### n"}`). SmolLM2-135M-Instruct gets some but not all of them
right, so GRPO groups have mixed rewards. Deterministic (seed 0); run again to regenerate.
"""
import json
import random

rng = random.Random(0)
lines = []
names = ["Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun"]
things = ["apples", "books", "coins", "pens", "stamps", "shells", "cards", "marbles"]
for i in range(400):
    who, what = rng.choice(names), rng.choice(things)
    a, b = rng.randint(2, 49), rng.randint(2, 49)
    if i % 2 == 0:
        q = f"{who} has {a} {what} and finds {b} more. How many {what} does {who} have now?"
        ans = a + b
        sol = f"{a} + {b} = {ans}"
    else:
        a, b = max(a, b), min(a, b)
        q = f"{who} has {a} {what} and gives away {b}. How many {what} does {who} have left?"
        ans = a - b
        sol = f"{a} - {b} = {ans}"
    lines.append(json.dumps({"question": q, "answer": f"{sol}\n#### {ans}"}))
with open("data/arithmetic.jsonl", "w") as f:
    f.write("\n".join(lines) + "\n")
