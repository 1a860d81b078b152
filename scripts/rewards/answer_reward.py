#!/usr/bin/env python3
"""Example reward program for `--reward cmd --reward-cmd "python3 scripts/rewards/answer_reward.py"`.

Protocol: tinylora starts the program once and keeps it running for the whole training. For
each completion it writes one JSON object on a line of stdin:
    {"prompt": "...", "completion": "...", "answer": "...", "tokens": 57, "truncated": false}
and reads one number per line from stdout, in the same order. Flush after every line; write
logs to stderr, never stdout.

This one scores 1.0 when the last number in the completion equals the answer (numbers compared
after dropping `,` and `$`), else 0.0. Standard library only.
"""
import json
import re
import sys

NUMBER = re.compile(r"-?\$?[0-9][0-9,]*(?:\.[0-9]+)?")


def value(text):
    """The number in `text` without `,` and `$`, as a float if it parses, else the text."""
    text = text.strip().replace(",", "").replace("$", "")
    try:
        return float(text)
    except ValueError:
        return text


def score(completion, answer):
    numbers = NUMBER.findall(completion)
    return 1.0 if numbers and value(numbers[-1]) == value(answer) else 0.0


def main():
    for line in sys.stdin:
        request = json.loads(line)
        print(score(request["completion"], request["answer"]), flush=True)


if __name__ == "__main__":
    main()
