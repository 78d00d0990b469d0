"""`ric evaluate` for a RiC run (paper stage 5): the preference grid on held-out prompts.

For every point of the grid the preference is mapped to targets, one response is generated per
held-out prompt with the targets in its prompt, and the responses are scored with the raw
(un-normalised) rewards. The base model, unconditioned (adapter off, no tags), answers the same
prompts first; then the adapter is merged into the base weights for speed and the grid is
generated, batched across points (`ric.generation.PolicyFront` over a `RiCGenerator`).
`ric.report.evaluate_front` does the chunking, scoring and
the files (eval/pareto.json, pareto.png, points/point_XX.csv, base.csv).
"""

from __future__ import annotations

from pathlib import Path

from .generation import GENERATION_FLAGS, PolicyFront, adapter_info, load_policy, resolve_adapter
from .inference import RiCGenerator
from .preference import preference_grid, preference_to_targets
from .report import FrontPoint, FrontSpec, evaluate_front
from .run_info import RunInfo, load_run_info


def grid_points(info: RunInfo, method: str, divisions: int | None) -> list[FrontPoint]:
    return [
        FrontPoint(preference=list(w), targets=preference_to_targets(w, info.score_low, info.score_high, method))
        for w in preference_grid(info.num_objectives, divisions)
    ]


def evaluate(
    run_dir,
    eval_args,
    args,
    adapter=None,
    eval_dir=None,
    overrides: dict | None = None,
    device=None,
    progress: bool = True,
    dtype: str | None = None,
) -> dict:
    """Evaluate a run (its latest adapter unless `adapter` is given); returns pareto.json's content.

    `overrides` holds generation settings given for this evaluation (`ric evaluate RUN --temperature 0.1`);
    `dtype` answers in another weight dtype than the run's (`ric evaluate RUN --dtype bfloat16`)."""
    from reward_models import load_rewards

    from .prepare import load_prepared

    run_dir = Path(run_dir)
    info, folder = load_run_info(run_dir)
    adapter_dir = Path(adapter) if adapter else resolve_adapter(folder, info)
    info = adapter_info(adapter_dir, info)
    _, eval_rows, _ = load_prepared(run_dir)
    settings = {**info.generation, "seed": args.seed}
    settings.update({GENERATION_FLAGS[k]: v for k, v in (overrides or {}).items() if k in GENERATION_FLAGS})
    if eval_args.eval_batch_size:
        settings["batch_size"] = eval_args.eval_batch_size
    points = grid_points(info, eval_args.eval_preference_method, eval_args.eval_grid_divisions)
    spec = FrontSpec(
        method="ric",
        run_dir=run_dir,
        eval_dir=Path(eval_dir) if eval_dir else run_dir / "eval",
        rewards=list(info.rewards),
        prompts=list(eval_rows["prompt"])[: eval_args.eval_num_prompts],
        points=points,
        settings=settings,
        chunk_size=max(2 * settings.get("batch_size", 32), 1),
        reference=eval_args.hypervolume_reference,
        eval_base=eval_args.eval_base_model,
        reward_stats=info.reward_stats,
        extra={
            "adapter": str(adapter_dir),
            "template": info.template,
            "preference_method": eval_args.eval_preference_method,
            "dtype": dtype or info.model_kwargs.get("dtype", "auto"),
        },
        title=f"RiC on {run_dir.name}: {info.rewards[0]} vs {info.rewards[-1]}",
        label="RiC, one adapter (grid of preferences)",
    )
    front = PolicyFront(
        lambda: RiCGenerator(*load_policy(info, adapter_dir, device, dtype=dtype), info),
        points,
        settings,
        method=eval_args.eval_preference_method,
        identity={"adapter": str(adapter_dir.resolve()), **({"dtype": dtype} if dtype else {})},
    )
    return evaluate_front(
        spec,
        front,
        lambda: load_rewards(info.rewards, info.reward_models, batch_size=args.reward_batch_size),
        progress,
    )
