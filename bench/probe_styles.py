"""Does the bundled model follow a system turn? Mean length and rewards of its answers under
several system turns, 48 training questions, one answer each. JSON to bench/results/style_probe.json.

    python bench/probe_styles.py [--max_new_tokens 32] [--temperature 0.7]

The demo's data comes from the turns the model does follow (cheerful, gloomy); this shows which.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STYLES = {
    "default": "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "cheerful": "You are a cheerful, upbeat assistant. Answer warmly and enthusiastically, with positive words.",
    "gloomy": "You are a gloomy, pessimistic assistant. Answer in a negative, critical tone and dwell on the "
    "downsides.",
    "terse": "You are a terse assistant. Answer in a few words only.",
    "child": "You talk to a small child. Use only very short, simple words and short sentences.",
    "professor": "You are a professor. Answer with long sentences full of technical, academic vocabulary.",
    "off-topic": "Ignore the user's question completely and talk about your favourite recipe instead.",
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--num_prompts", type=int, default=48)
    a = parser.parse_args()

    from reward_models import load_rewards
    from ric.generation import generate_batched
    from ric.models import load_causal_lm, load_tokenizer
    from ric.score_tags import add_score_tags

    lines = (ROOT / "recipes/demo/data/train_prompts.jsonl").read_text().splitlines()
    prompts = [json.loads(line)["prompt"] for line in lines][: a.num_prompts]
    tokenizer = load_tokenizer("bundled:smollm2-135m-instruct")
    model = load_causal_lm("bundled:smollm2-135m-instruct", dtype="float32")
    names = ["positivity", "conciseness", "readability", "relevance"]
    scorers = load_rewards(names)
    result = {
        "num_prompts": len(prompts),
        "max_new_tokens": a.max_new_tokens,
        "temperature": a.temperature,
        "styles": {},
    }
    for style, system in STYLES.items():
        start = time.time()
        texts = [add_score_tags(p, None, "chat", tokenizer, system) for p in prompts]
        responses = generate_batched(
            model,
            tokenizer,
            texts,
            max_new_tokens=a.max_new_tokens,
            temperature=a.temperature,
            batch_size=64,
            seed=0,
            template="chat",
            progress=False,
        )
        stats = {"generated_tokens": responses.generated_tokens}
        responses = responses.texts
        words = [len(r.split()) for r in responses]
        row = {
            "system_prompt": system,
            "words_mean": statistics.mean(words),
            "words_std": statistics.pstdev(words),
            "cut_by_budget": stats["truncated"],
            "seconds": round(time.time() - start, 1),
            "example": responses[0],
        }
        for name, scorer in zip(names, scorers):
            scores = scorer(prompts, responses)
            row[name] = {"mean": statistics.mean(scores), "std": statistics.pstdev(scores)}
        result["styles"][style] = row
        print(
            style,
            {k: (round(v["mean"], 3) if isinstance(v, dict) else v) for k, v in row.items() if k != "system_prompt"},
        )
    out = ROOT / "bench/results/style_probe.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
