"""Dynamic preference adjustment (paper stage 4): preference weights -> target scores -> score tags
in the prompt -> one batched generation with the run's single adapter.

    from ric import RiCGenerator
    gen = RiCGenerator.from_run("runs/demo")
    gen.generate(["How do I brew green tea?"], preference=[0.2, 0.8])
    # -> [{"prompt": ..., "response": ..., "targets": [..., ...], "preference": [0.2, 0.8]}]

The mapping itself (`linear`, `l2`, `linf`) is `ric.preference.preference_to_targets`; a request may
also give the normalised targets directly. Requests with different preferences differ only in
their prompt text, so they share every batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .generation import Condition, PolicyGenerator, adapter_info, load_policy, merge_for_inference, resolve_adapter
from .preference import check_targets, parse_preference, preference_to_targets
from .run_info import load_run_info


class RiCGenerator(PolicyGenerator):
    """Preference weights in, targets into the score tags, batched generation, responses out."""

    takes_targets = True

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        adapter: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ):
        """Load a trained run: `run_dir` is a run directory (its latest adapter is used) or an adapter folder.
        `dtype` ("bfloat16", ...) answers in another weight dtype than the run's."""
        info, folder = load_run_info(run_dir)
        adapter_dir = Path(adapter) if adapter else resolve_adapter(folder, info)
        info = adapter_info(adapter_dir, info)
        return cls(*load_policy(info, adapter_dir, device, merge=True, dtype=dtype), info)

    def prepare_points(self) -> None:
        merge_for_inference(self.model)  # after the base model's answers: disable_adapter() would unmerge

    def targets_for(self, preference, method: str | None = None) -> list[float]:
        weights = parse_preference(preference, self.info.num_objectives)
        return preference_to_targets(
            weights, self.info.score_low, self.info.score_high, method or self.info.preference_method
        )

    def condition(
        self, preference=None, targets: Sequence[float] | None = None, method: str | None = None
    ) -> Condition:
        if (preference is None) == (targets is None):
            raise ValueError("give either preference (weights) or targets (normalised scores), not both")
        if preference is not None:
            weights = parse_preference(preference, self.info.num_objectives)
            return Condition(key="ric", preference=tuple(weights), targets=tuple(self.targets_for(weights, method)))
        return Condition(
            key="ric",
            targets=tuple(check_targets(targets, self.info.score_low, self.info.score_high, self.info.rewards)),
        )


class ServedGenerator(PolicyGenerator):
    """A run's answers from an OpenAI-compatible server that serves its export (`ric evaluate --engine
    llama.cpp`): ric formats each prompt (score tags in) as `formatter` does and posts it to the server's
    `/v1/completions`, one request at a time (llama-cpp-python's server answers one at a time); the answer
    is finished as an in-process one is (cut at a turn marker, the unfinished sentence of a cut answer
    dropped). The base model's answers, the evaluation's reference, come from `load_base()`, in-process."""

    def __init__(self, formatter: PolicyGenerator, url: str, model: str, sampling: dict, load_base, identity: dict):
        super().__init__(None, formatter.tokenizer, formatter.info)
        self.formatter, self.url, self.model_name, self.sampling = formatter, url.rstrip("/"), model, sampling
        self.load_base, self.base_generator, self.identity = load_base, None, identity
        self.takes_targets = formatter.takes_targets

    def condition(self, preference=None, targets=None, method: str | None = None) -> Condition:
        return self.formatter.condition(preference, targets, method)

    def format(self, prompt, condition: Condition) -> str:
        return self.formatter.format(prompt, condition)

    def complete(self, text: str, settings: dict, seed: int | None) -> tuple[str, str, int]:
        """(text, finish reason, completion tokens) of one prompt."""
        import json
        import urllib.request

        from .generation import STOP_MARKERS

        body = {
            **self.sampling,
            "model": self.model_name,
            "prompt": text,
            "max_tokens": settings["max_new_tokens"],
            "temperature": settings["temperature"],
            "top_p": settings["top_p"],
            "stop": list(STOP_MARKERS.get(self.info.template, ())),
        }
        if seed is not None:
            body["seed"] = seed
        request = urllib.request.Request(
            f"{self.url}/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            answer = json.loads(response.read())
        choice = answer["choices"][0]
        tokens = (answer.get("usage") or {}).get("completion_tokens")
        if tokens is None:
            tokens = len(self.tokenizer(choice["text"], add_special_tokens=False)["input_ids"])
        return choice["text"], choice.get("finish_reason") or "stop", tokens

    def generate_conditioned(
        self, prompts: Sequence, conditions: Sequence[Condition], progress: bool = False, **overrides
    ) -> list[dict]:
        from .generation import Generations, clean_response, trim_to_sentence

        if len(prompts) != len(conditions):
            raise ValueError(f"got {len(prompts)} prompts and {len(conditions)} conditions")
        settings = self.settings(**overrides)
        seed = settings.get("seed")
        rows = range(len(prompts))
        if progress:
            from tqdm.auto import tqdm

            rows = tqdm(rows, desc=f"generating through {self.url}", unit="answer")
        out = Generations(texts=[], hit_budget=[], generated_tokens=0)
        for i in rows:
            text, reason, tokens = self.complete(
                self.format(prompts[i], conditions[i]), settings, None if seed is None else seed + i
            )
            text = clean_response(text, self.info.template)
            if reason == "length" and settings.get("trim_truncated"):
                text = trim_to_sentence(text)
            out.texts.append(text)
            out.hit_budget.append(reason == "length")
            out.generated_tokens += tokens
        self.tally.add(out)
        return [{"prompt": p, "response": r, **c.describe()} for p, r, c in zip(prompts, out.texts, conditions)]

    def generate_base(self, prompts: Sequence, progress: bool = False, **overrides) -> list[str]:
        if self.base_generator is None:
            self.base_generator = self.load_base()
            self.base_generator.tally = self.tally  # one count of the evaluation's tokens
        return self.base_generator.generate_base(prompts, progress=progress, **overrides)
