"""Generation on vLLM, for the online stage's ~20,000 generations per iteration on a GPU.

Used when `generation_backend` is "vllm", or "auto" with vLLM installed and CUDA present
(`pick_backend`). vLLM itself is imported only when an engine is built.
The base model is loaded once per iteration with LoRA enabled and the iteration's adapter is
attached per request, so no merged model is ever written to disk.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence


def vllm_available() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pick_backend(choice: str) -> str:
    """'vllm' or 'transformers' for `generation_backend` ('auto': vLLM when installed and CUDA is present)."""
    if choice == "vllm":
        if not vllm_available():
            raise ValueError(
                "generation_backend: 'vllm' needs the vllm package and a CUDA GPU; use 'auto' or 'transformers'"
            )
        return "vllm"
    if choice == "auto" and vllm_available():
        return "vllm"
    return "transformers"


class VLLMGenerator:
    """A vLLM engine over the base model, generating with a LoRA adapter."""

    def __init__(
        self,
        base_model_path: str,
        adapter_dir: str,
        lora_rank: int,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        trust_remote_code: bool = False,
    ):
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        self.llm = LLM(
            model=base_model_path,
            enable_lora=True,
            max_lora_rank=max(8, lora_rank),
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            trust_remote_code=trust_remote_code,
        )
        self.lora = LoRARequest("ric", 1, adapter_dir)

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None = None,
        template: str = "assistant",
        trim_truncated: bool = False,
    ):
        """One completion per prompt, finished as `ric.generation.generate_batched` finishes its own (turn
        markers cut, and with `trim_truncated` the unfinished last sentence of a budget-cut answer
        dropped), as a `Generations`. Request i samples with seed + i (one shared `SamplingParams`
        seed would give every request the same random stream)."""
        from vllm import SamplingParams

        from .generation import Generations, clean_response, trim_to_sentence

        params = [
            SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=s)
            for s in request_seeds(seed, len(prompts))
        ]
        outputs = self.llm.generate(list(prompts), params, lora_request=self.lora, use_tqdm=True)
        hits = [o.outputs[0].finish_reason == "length" for o in outputs]
        texts = [clean_response(o.outputs[0].text, template) for o in outputs]
        texts = [trim_to_sentence(t) if trim_truncated and hit else t for t, hit in zip(texts, hits)]
        return Generations(
            texts=texts, hit_budget=hits, generated_tokens=sum(len(o.outputs[0].token_ids) for o in outputs)
        )


def request_seeds(seed: int | None, n: int) -> list[int | None]:
    """One seed per request: seed, seed + 1, ... (None leaves every request unseeded)."""
    return [None] * n if seed is None else [seed + i for i in range(n)]
