"""RiC against MORLHF and Rewarded Soups on the positivity/relevance demo task
(recipes/demo/ric_relevance.yaml, morlhf.yaml, soups.yaml), same evaluation prompts; one plot and a
table with hypervolume, preference-following and compute. Writes bench/results/compare.{json,md,png}.

    python bench/bench_demo.py --recipe recipes/demo/ric_relevance.yaml \
        --output_dir runs/demo-relevance-bench --name demo_relevance
    python bench/bench_online.py
    python bench/bench_compare.py [--ric runs/demo-relevance-bench] [--ric_online runs/demo-online]
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ric", default=str(ROOT / "runs/demo-relevance-bench"))
    parser.add_argument("--ric_online", default=str(ROOT / "runs/demo-online"))
    a, extra = parser.parse_known_args()
    online = sorted(Path(a.ric_online).glob("eval_online_*"))
    runs = [a.ric] + ([str(online[-1])] if online else [])
    for name in ("morlhf", "soups"):
        out = ROOT / f"runs/demo-{name}"
        subprocess.run(
            [sys.executable, "-m", "ric", "run", f"recipes/demo/{name}.yaml", "--output_dir", str(out), *extra],
            check=True,
            cwd=ROOT,
        )
        runs.append(str(out))
    out = ROOT / "bench/results"
    subprocess.run(
        [sys.executable, "-m", "ric", "compare", *runs, "--out", str(out / "compare_tmp")], check=True, cwd=ROOT
    )
    for f in ("compare.json", "compare.md", "compare.png"):
        shutil.move(str(out / "compare_tmp" / f), str(out / f))
    shutil.rmtree(out / "compare_tmp")
    print((out / "compare.md").read_text())


if __name__ == "__main__":
    main()
