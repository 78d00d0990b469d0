"""`ric export RUN_DIR OUT`: a trained run as one plain model that any inference engine can serve.

A RiC model reads its trade-off from the prompt (the score tags), so its merged model serves every
preference: ric (or anyone, from `ric_serving.json`) maps the preference to targets and writes the
tags; the engine only sees text. What each method exports:

- `ric`, `sft`: the adapter merged into the base model (`merge_and_unload`).
- `morlhf`: one trained policy, `--point LABEL` or the one nearest to `--preference`.
- `soups`: one mix per export, `--preference` required (the per-reward adapters mixed at its weights,
  exactly as `ric generate` mixes them, then merged).
- `prt` and text-to-image runs are refused: a PRT model is two models combined at every decoding step,
  a text-to-image run is no language model.

Formats: `hf` (safetensors + tokenizer, `--outtype f32|f16|bf16`) or `gguf` (`--outtype f32|f16|bf16|q8_0`,
written by llama.cpp's own converter `convert_hf_to_gguf.py`; `q4_k_m|q4_0`, its f16 file quantized by
llama.cpp's own quantizer, `llama_model_quantize` in llama-cpp-python). It ships only in llama-cpp-python's source
distribution: ric takes it from `$RIC_LLAMA_CPP_SOURCE` (a llama.cpp checkout, or that sdist, unpacked or
.tar.gz), else from its cache, else downloads the sdist of the installed llama-cpp-python version from
PyPI once (77 MB) and keeps the converter's files. Install with `pip install "ric[llamacpp]"`.

`OUT/ric_serving.json` says how to serve the export: rewards, score range, preference mapping, template,
tag format, an example prompt, generation settings, and the run's record.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from .recipe import RecipeError
from .rundir import atomic_dir, write_json

logger = logging.getLogger("ric.export")

FORMATS = ("hf", "gguf")
OUTTYPES = {"hf": ("f32", "f16", "bf16"), "gguf": ("f32", "f16", "bf16", "q8_0", "q4_k_m", "q4_0")}
# GGUF types the converter does not write: llama.cpp's own quantizer (`llama_model_quantize`, through
# llama-cpp-python) makes them from the converter's f16 file
QUANTIZED = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}
TORCH_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
SERVING_FILE = "ric_serving.json"
SERVING_FORMAT = 1
# the llama-cpp-python whose converter is fetched when none is installed (the version CI builds)
LLAMA_CPP_VERSION = "0.3.36"
INSTALL_HINT = 'pip install "ric[llamacpp]" (llama-cpp-python[server] and sentencepiece; it builds llama.cpp)'
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion", "gguf-py")


@dataclass
class ExportPlan:
    """What `export` will write, checked before any model loads."""

    run_dir: Path
    out: Path
    format: str
    outtype: str
    method: object  # ric.methods.Method
    info: object  # RunInfo
    preference: list[float] | None = None
    point: str | None = None

    @property
    def gguf_name(self) -> str:
        return f"model-{self.outtype}.gguf"


def plan_export(
    run_dir,
    out,
    format: str = "hf",
    outtype: str | None = None,
    point: str | None = None,
    preference=None,
    overwrite: bool = False,
) -> ExportPlan:
    """Every refusal `ric export` makes, before any model loads: the format and type, the run (finished,
    a method that exports), which point (baselines), the output folder (exists: `--overwrite`), and for
    GGUF the converter and its dependencies."""
    from .methods import get_method
    from .preference import parse_preference
    from .run_info import load_run_info

    if format not in FORMATS:
        raise RecipeError(f"--format: {format!r} is not a format; choose one of {', '.join(FORMATS)}")
    outtype = outtype or ("f16" if format == "gguf" else "f32")
    if outtype not in OUTTYPES[format]:
        raise RecipeError(
            f"--outtype: {outtype!r} is not a {format} type; choose one of {', '.join(OUTTYPES[format])}"
            + (" (q8_0 is a GGUF type: add --format gguf)" if outtype == "q8_0" else "")
        )
    run_dir, out = Path(run_dir), Path(out)
    info, _ = load_run_info(run_dir)
    method = get_method(info.method, f"{run_dir}/ric_run.json")
    if method.export is None:
        raise RecipeError(f"{run_dir}: {method.export_refusal}")
    check_finished(run_dir, info)
    weights = None
    if preference is not None:
        weights = parse_preference(preference, info.num_objectives, field="--preference")
    if method.export == "run" and (point or weights is not None):
        flag = "--point" if point else "--preference"
        raise RecipeError(
            f"{flag}: a {method.name} export is one model for every preference"
            + (" (the preference goes into the prompt's score tags at serving time)" if method.takes_targets else "")
            + f"; remove {flag}"
        )
    if method.export == "mix":
        if point:
            raise RecipeError("--point: a Rewarded Soups run has no trained points; give --preference (its mix)")
        if weights is None:
            raise RecipeError(
                "--preference: required for a Rewarded Soups run (one export per mix), e.g. --preference 0.3,0.7"
            )
    if method.export == "policy":
        labels = [p["label"] for p in info.policies or []]
        if point and weights is not None:
            raise RecipeError("--point and --preference: give one (a policy label, or the nearest to a preference)")
        if point and point not in labels:
            raise RecipeError(f"--point: {point!r} is not a policy of this run; its policies are {', '.join(labels)}")
        if not point and weights is None:
            raise RecipeError(
                f"--point or --preference: a {method.name} run has one model per policy ({', '.join(labels)}); "
                "name one with --point, or give --preference for the nearest"
            )
    if out.exists() and not overwrite:
        raise RecipeError(f"{out}: exists; choose another output folder or add --overwrite to replace it")
    if out.resolve() == run_dir.resolve() or out.resolve() in run_dir.resolve().parents:
        raise RecipeError(f"{out}: would replace the run itself; choose another output folder")
    plan = ExportPlan(run_dir, out, format, outtype, method, info, weights, point)
    if format == "gguf":
        check_converter_dependencies()
        if outtype in QUANTIZED:
            import importlib.util

            if importlib.util.find_spec("llama_cpp") is None:
                raise RecipeError(
                    f"--outtype {outtype}: llama.cpp's quantizer comes with llama-cpp-python; {INSTALL_HINT}"
                )
    return plan


def check_finished(run_dir: Path, info) -> None:
    """Refuse a run whose training stages have not all finished (by name), and one with no trained weights."""
    from .rundir import STATE, RunState

    state = RunState(run_dir).data["stages"] if (run_dir / STATE).exists() else {}
    unfinished = [
        name
        for name, entry in state.items()
        if name != "prepare" and not name.startswith("evaluate") and entry.get("status") != "done"
    ]
    trained = [name for name, entry in state.items() if entry.get("status") == "done" and name != "prepare"]
    if unfinished:
        raise RecipeError(
            f"{run_dir}: stage {unfinished[0]} has not finished ({state[unfinished[0]].get('status')}); "
            "finish the run (`ric train` resumes it) before exporting"
        )
    if not trained and info.adapter is None and not info.policies:
        raise RecipeError(f"{run_dir}: nothing is trained yet; run `ric train` (or `ric run`) first")


def export(
    run_dir,
    out,
    format: str = "hf",
    outtype: str | None = None,
    point: str | None = None,
    preference=None,
    overwrite: bool = False,
    record: dict | None = None,
) -> Path:
    """Write the run's model (merged) to `out` in `format`, with `ric_serving.json` (plus `record`'s fields).
    Returns `out`."""
    plan = plan_export(run_dir, out, format, outtype, point, preference, overwrite)
    converter = llama_cpp_converter() if plan.format == "gguf" else None
    model, tokenizer, chosen = merged_model(plan)
    with atomic_dir(plan.out) as tmp:
        hf_dir = tmp if plan.format == "hf" else Path(tempfile.mkdtemp(prefix=".hf.", dir=tmp))
        dtype = TORCH_DTYPES.get(plan.outtype, "float32") if plan.format == "hf" else "float32"
        logger.info("writing the merged model (%s) to %s", dtype, hf_dir)
        import torch

        model.to(getattr(torch, dtype)).save_pretrained(str(hf_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(hf_dir))
        files = {"format": plan.format, "outtype": plan.outtype}
        if plan.format == "gguf" and plan.outtype in QUANTIZED:
            f16 = convert_to_gguf(converter, hf_dir, tmp / ".model-f16.gguf", "f16")
            shutil.rmtree(hf_dir)
            quantize_gguf(f16, tmp / plan.gguf_name, plan.outtype)
            f16.unlink()
            files["file"] = plan.gguf_name
        elif plan.format == "gguf":
            convert_to_gguf(converter, hf_dir, tmp / plan.gguf_name, plan.outtype)
            shutil.rmtree(hf_dir)
            files["file"] = plan.gguf_name
        write_json(tmp / SERVING_FILE, {**serving_record(plan, tokenizer, chosen, files), **(record or {})})
        os.chmod(tmp, 0o755)  # a temporary folder is private; the export is not
    logger.info("exported %s (%s run) to %s", plan.run_dir, plan.method.name, plan.out)
    return plan.out


def merged_model(plan: ExportPlan):
    """(the merged model, its tokenizer, the point it answers: preference and policy, or None for RiC/SFT)."""
    generator = plan.method.load_generator(plan.run_dir, device="cpu")
    model, chosen = generator.model, None
    if plan.method.export in ("policy", "mix"):
        if plan.point:
            policy = next(p for p in plan.info.policies if p["label"] == plan.point)
            condition = generator.condition(preference=policy["weights"])
        else:
            condition = generator.condition(preference=plan.preference)
        generator.activate(condition.key)
        chosen = {"preference": list(condition.preference), "policy": condition.policy}
        if plan.preference is not None:
            chosen["asked"] = list(plan.preference)
    active = model.active_adapter
    with warnings.catch_warnings():  # RiC's generator has merged its adapter already: PEFT says so
        warnings.filterwarnings("ignore", message="All adapters are already merged")
        merged = model.merge_and_unload(adapter_names=[active] if isinstance(active, str) else list(active))
    merged.eval()
    return merged, generator.tokenizer, chosen


def serving_record(plan: ExportPlan, tokenizer, chosen: dict | None, files: dict) -> dict:
    """What a server needs to serve the export: how a preference becomes the prompt it answers."""
    from . import __version__
    from .generation import format_prompts

    info = plan.info
    record = {
        "serving_format": SERVING_FORMAT,
        "exported_by": f"ric {__version__}",
        "run": str(plan.run_dir.resolve()),
        "method": info.method,
        "model": files,
        "rewards": list(info.rewards),
        "template": info.template,
        "system_prompt": info.system_prompt,
        "generation": dict(info.generation),
        "point": chosen,
    }
    n = info.num_objectives
    if plan.method.takes_targets:
        from .preference import preference_to_targets

        equal = [1 / n] * n
        targets = preference_to_targets(equal, info.score_low, info.score_high, info.preference_method)
        record.update(
            score_low=list(info.score_low),
            score_high=list(info.score_high),
            reward_stats=info.reward_stats.to_dict() if info.reward_stats else None,
            preference_method=info.preference_method,
            tags={
                "format": " <rm{i}_score> {score:.1f}, for i = 1..n in the order of `rewards`",
                "targets": "ric.preference_to_targets(weights, score_low, score_high, preference_method)",
                "where": TAG_PLACES[info.template],
            },
            example={
                "preference": equal,
                "targets": list(targets),
                "prompt": format_prompts(["Hello!"], info.template, tokenizer, [targets], info.system_prompt)[0],
            },
        )
    else:
        record["example"] = {
            "prompt": format_prompts(["Hello!"], info.template, tokenizer, system_prompt=info.system_prompt)[0]
        }
    record["run_info"] = info.to_dict()
    return record


TAG_PLACES = {
    "chat": "appended to the last user turn, then the tokenizer's chat template renders the prompt",
    "assistant": "between the prompt and its final '\\n\\nAssistant:' marker",
    "summary": "after the post, before ' ### Response:'",
}


def read_serving(folder) -> dict:
    path = Path(folder) / SERVING_FILE
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no {SERVING_FILE}: give a folder written by `ric export`")
    return json.loads(path.read_text())


# --- llama.cpp's converter ---------------------------------------------------------------------------


def check_converter_dependencies() -> None:
    """The converter's imports that ric does not install (a clear error, with the install command)."""
    import importlib.util

    missing = [m for m in ("sentencepiece",) if importlib.util.find_spec(m) is None]
    if missing:
        raise RecipeError(f"--format gguf: llama.cpp's converter needs {', '.join(missing)}; {INSTALL_HINT}")


def llama_cpp_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return None


def converter_cache(version: str) -> Path:
    from .models import cache_dir

    return cache_dir() / f"llama.cpp-converter-{version}"


def _is_converter(folder: Path) -> bool:
    return all((folder / part).exists() for part in CONVERTER_PARTS)


def llama_cpp_converter(download: bool = True) -> Path:
    """The folder holding llama.cpp's `convert_hf_to_gguf.py` (with its `conversion/` and `gguf-py/`):
    `$RIC_LLAMA_CPP_SOURCE`, else the cache for the installed llama-cpp-python version, else (with
    `download`) that version's sdist fetched from PyPI once and unpacked into the cache."""
    source = os.environ.get("RIC_LLAMA_CPP_SOURCE")
    if source:
        path = Path(source)
        for folder in (path, path / "vendor" / "llama.cpp"):
            if folder.is_dir() and _is_converter(folder):
                return folder
        if path.is_file() and path.name.endswith(".tar.gz"):
            return unpack_converter(path, converter_cache(sdist_version(path)))
        raise FileNotFoundError(
            f"RIC_LLAMA_CPP_SOURCE={source}: no convert_hf_to_gguf.py with conversion/ and gguf-py/ there; "
            "point it at a llama.cpp checkout or llama-cpp-python's source distribution"
        )
    version = llama_cpp_version() or LLAMA_CPP_VERSION
    cached = converter_cache(version)
    if _is_converter(cached):
        return cached
    if not download:
        raise FileNotFoundError(
            f"llama.cpp's converter for llama-cpp-python {version} is not in {cached}; "
            f"`python -m ric.export --fetch_converter` fetches it, or set RIC_LLAMA_CPP_SOURCE"
        )
    return fetch_converter(version)


def fetch_converter(version: str) -> Path:
    """Download llama-cpp-python's sdist (`version`) with pip and keep its converter in the cache."""
    with tempfile.TemporaryDirectory(prefix="ric-llama-cpp-") as tmp:
        logger.info(
            "fetching llama.cpp's converter: llama-cpp-python %s's source distribution from PyPI (~77 MB, once)",
            version,
        )
        command = [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}"]
        command += ["--no-binary", ":all:", "--no-deps", "-d", tmp]
        done = subprocess.run(command, capture_output=True, text=True)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not sdists:
            raise OSError(
                f"could not download llama-cpp-python {version}'s source distribution "
                f"({done.stderr.strip()[-300:]}); download it yourself and set RIC_LLAMA_CPP_SOURCE to it"
            )
        return unpack_converter(sdists[0], converter_cache(version))


def sdist_version(path: Path) -> str:
    name = path.name.removesuffix(".tar.gz")
    return name.rsplit("-", 1)[-1] if "-" in name else "local"


def unpack_converter(sdist: Path, target: Path) -> Path:
    """Unpack only the converter's files (not the 75 MB of vocab test files) from the sdist into `target`."""
    wanted = tuple(f"vendor/llama.cpp/{part}" for part in CONVERTER_PARTS)
    with atomic_dir(target) as tmp, tarfile.open(sdist, "r:gz") as archive:
        members = []
        for member in archive.getmembers():
            inner = member.name.split("/", 1)[-1]
            if inner.startswith(wanted) and (member.isfile() or member.isdir()):
                member.name = inner.removeprefix("vendor/llama.cpp/")
                members.append(member)
        if not members:
            raise FileNotFoundError(f"{sdist}: no vendor/llama.cpp/convert_hf_to_gguf.py inside")
        archive.extractall(tmp, members=members, filter="data")
    if not _is_converter(target):
        raise FileNotFoundError(f"{sdist}: the converter's files are incomplete ({', '.join(CONVERTER_PARTS)})")
    logger.info("llama.cpp's converter is in %s", target)
    return target


def convert_to_gguf(converter: Path, hf_dir: Path, outfile: Path, outtype: str) -> Path:
    """Run llama.cpp's `convert_hf_to_gguf.py` on a saved model (its progress goes to the terminal)."""
    command = [sys.executable, str(converter / "convert_hf_to_gguf.py"), str(hf_dir)]
    command += ["--outfile", str(outfile), "--outtype", outtype]
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # its own gguf-py, not the installed one
    logger.info("converting to GGUF (%s) with llama.cpp's convert_hf_to_gguf.py", outtype)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not outfile.exists():
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise OSError(f"llama.cpp's converter failed (exit {done.returncode}):\n{tail}")
    return outfile


def quantize_gguf(source: Path, target: Path, outtype: str) -> Path:
    """llama.cpp's quantizer (`llama_model_quantize`) on an f16 GGUF."""
    import llama_cpp

    logger.info("quantizing to %s with llama.cpp's llama_model_quantize", outtype)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTIZED[outtype])
    params.nthread = os.cpu_count() or 1
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    if code != 0 or not target.exists():
        raise OSError(f"llama.cpp's quantizer failed on {source} (code {code})")
    return target


def gguf_tokens(path) -> list[str]:
    """The vocabulary a GGUF file carries (`tokenizer.ggml.tokens`), read without loading the model."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    field = reader.fields.get("tokenizer.ggml.tokens")
    if field is None:
        raise ValueError(f"{path}: no tokenizer.ggml.tokens in this GGUF file")
    return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]


def check_gguf_tokenizer(path, tokenizer) -> None:
    """Refuse a GGUF whose vocabulary is not the run's tokenizer's (the tags would be other tokens)."""
    tokens = gguf_tokens(path)
    ours = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    if len(tokens) != len(ours):
        raise ValueError(f"{path}: its vocabulary has {len(tokens)} tokens, the run's tokenizer {len(ours)}")
    differ = next((i for i, (a, b) in enumerate(zip(tokens, ours)) if a != b), None)
    if differ is not None:
        raise ValueError(
            f"{path}: its tokenizer differs from the run's (token {differ} is {tokens[differ]!r} there, "
            f"{ours[differ]!r} in the run's); export the run again"
        )


if __name__ == "__main__":  # python -m ric.export --fetch_converter [SDIST.tar.gz]
    from .cli import _setup_logging

    _setup_logging()
    args = sys.argv[1:]
    if not args or args[0] != "--fetch_converter":
        sys.exit("usage: python -m ric.export --fetch_converter [llama_cpp_python-X.tar.gz]")
    if len(args) > 1:
        sdist = Path(args[1])
        print(unpack_converter(sdist, converter_cache(sdist_version(sdist))))
    else:
        print(llama_cpp_converter())


# --- exports cached in a run directory, for `ric serve --engine` and `ric evaluate --engine` -------------


def source_fingerprint(run_dir: Path) -> str:
    """What a cached export of the run was made from: the run record and every trained weight file
    (name, size, modification time)."""
    from .chunks import fingerprint

    run_dir = Path(run_dir)
    files = [run_dir / "ric_run.json"] + sorted(run_dir.glob("**/adapter_model.safetensors"))
    return fingerprint(
        [{"f": str(f.relative_to(run_dir)), "s": f.stat().st_size, "t": f.stat().st_mtime_ns} for f in files]
    )


def cached_export(run_dir, format: str, outtype: str) -> Path:
    """RUN_DIR/export/<format>-<outtype>, exported now unless a copy made from the same weights is there.
    Returns the folder."""
    run_dir = Path(run_dir)
    folder = run_dir / "export" / f"{format}-{outtype}"
    current = source_fingerprint(run_dir)
    if (folder / SERVING_FILE).exists() and read_serving(folder).get("source_fingerprint") == current:
        logger.info("using the %s export in %s", format, folder)
        return folder
    return export(run_dir, folder, format, outtype, overwrite=True, record={"source_fingerprint": current})


def exported_model(folder: Path) -> Path:
    """The model file (GGUF) or folder (Hugging Face) of an export."""
    model = read_serving(folder)["model"]
    return folder / model["file"] if model["format"] == "gguf" else folder
