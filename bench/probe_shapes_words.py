"""How strongly the bundled shapes pipeline follows the look words of its pre-training captions.

    python bench/probe_shapes_words.py [--model bundled:shapes-sd] [--images 32] [--guidance 3.0]

A base that cannot be steered towards grey or vivid, plain or busy images by words it was trained on
gives a RiC LoRA little to build on. For each colour/shape caption this draws `--images` images with
no look word, with "grey" / "vivid" (saturation) and with "plain" / "busy" (detail), and reports the
mean colorfulness and compressibility per variant. Writes bench/results/shapes_words.json (or --out).
"""

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CAPTIONS = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "diamond")]
VARIANTS = {
    "bare": "a {colour} {shape}",
    "grey": "a grey {colour} {shape}",
    "vivid": "a vivid {colour} {shape}",
    "plain": "a {colour} {shape}, plain",
    "busy": "a {colour} {shape}, busy",
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="bundled:shapes-sd")
    parser.add_argument("--images", type=int, default=32, help="images per caption and variant")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench/results/shapes_words.json"))
    a = parser.parse_args()

    import torch
    from diffusers import StableDiffusionPipeline

    from reward_models import load_rewards
    from ric.diffusion.tiny import resolve_pipeline

    path = resolve_pipeline(a.model)
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    rewards = load_rewards(["colorfulness", "compressibility"])
    start, result = time.time(), {}
    for name, template in VARIANTS.items():
        images = []
        for colour, shape in CAPTIONS:
            out = pipe(
                [template.format(colour=colour, shape=shape)] * a.images,
                num_inference_steps=a.steps,
                guidance_scale=a.guidance,
                height=32,
                width=32,
                generator=torch.Generator().manual_seed(0),
            )
            images += out.images
        prompts = [""] * len(images)
        result[name] = {r.name: round(float(sum(r(prompts, images)) / len(images)), 3) for r in rewards}
        print(name, result[name], flush=True)
    record = {
        "model": a.model,
        "path": str(path),
        "pretraining": {
            k: v
            for k, v in json.loads((Path(path) / "pretrain_stats.json").read_text()).items()
            if not k.endswith("_loss")
        },
        "images_per_variant": a.images * len(CAPTIONS),
        "guidance_scale": a.guidance,
        "num_inference_steps": a.steps,
        "means": result,
        "seconds": round(time.time() - start, 1),
    }
    Path(a.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
