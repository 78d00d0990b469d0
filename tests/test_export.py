"""`ric export`: a run as one merged model (Hugging Face, GGUF through llama.cpp's own converter) with
ric_serving.json, and its refusals; `ric evaluate --engine llama.cpp` through that export. The GGUF tests need
llama-cpp-python and the converter (`pip install "ric[llamacpp]"`, `python -m ric.export --fetch_converter`):
CI installs both."""

import importlib.util
import json
import shutil

import pytest
import torch

from ric.cli import main
from tests.server.support import build_run

needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("sentencepiece") is None,
    reason='llama-cpp-python and sentencepiece are not installed (pip install "ric[llamacpp]")',
)


def converter_cached() -> bool:
    from ric.export import llama_cpp_converter

    try:
        llama_cpp_converter(download=False)  # tests never download
    except FileNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    return build_run(tmp_path_factory.mktemp("export-ric"), tiny_model_dir)


def served_logits(run_dir, prompt: str):
    """The run's next-token logits for `prompt` as `ric generate` computes them (adapter merged in memory)."""
    from ric.inference import RiCGenerator

    generator = RiCGenerator.from_run(run_dir, device="cpu")
    ids = generator.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return generator.model(input_ids=ids).logits[0], ids[0].tolist()


def test_hf_export_is_the_run_merged(run, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "hf"
    assert main(["export", str(run), str(out)]) == 0
    serving = json.loads((out / "ric_serving.json").read_text())
    info = json.loads((run / "ric_run.json").read_text())
    assert serving["rewards"] == info["rewards"] and serving["score_low"] == info["score_low"]
    assert serving["preference_method"] == info["preference_method"] and serving["model"]["format"] == "hf"
    prompt = serving["example"]["prompt"]
    assert "<rm1_score> " in prompt and "<rm2_score> " in prompt, "the example carries the equal preference's tags"
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters()), "a plain model, the adapter folded in"
    expected, ids = served_logits(run, prompt)
    assert AutoTokenizer.from_pretrained(out)(prompt, add_special_tokens=False)["input_ids"] == ids
    with torch.no_grad():
        got = merged(input_ids=torch.tensor([ids])).logits[0]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # an existing folder is kept unless --overwrite
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert main(["export", str(run), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "model.safetensors").stat().st_mtime_ns == before
    assert main(["export", str(run), str(out), "--overwrite", "--outtype", "bf16"]) == 0
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16


@needs_llama_cpp
def test_gguf_export_tokenizes_and_answers_as_the_hf_export(run, tmp_path):
    from llama_cpp import Llama

    if not converter_cached():
        pytest.fail("llama.cpp's converter is not cached: run `python -m ric.export --fetch_converter` (CI does)")
    out = tmp_path / "gguf"
    assert main(["export", str(run), str(out), "--format", "gguf", "--outtype", "f32"]) == 0
    serving = json.loads((out / "ric_serving.json").read_text())
    assert serving["model"] == {"format": "gguf", "outtype": "f32", "file": "model-f32.gguf"}
    prompt = serving["example"]["prompt"]
    expected, ids = served_logits(run, prompt)
    llm = Llama(str(out / "model-f32.gguf"), n_ctx=256, logits_all=True, verbose=False)
    assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == ids, "the tagged prompt: the same tokens"
    llm.eval(ids)
    got = torch.tensor(llm.scores[: len(ids)])
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-3)


@needs_llama_cpp
def test_a_gguf_of_another_tokenizer_is_refused(run, tmp_path, smol_tokenizer):
    from ric.export import check_gguf_tokenizer, export

    if not converter_cached():
        pytest.fail("llama.cpp's converter is not cached: run `python -m ric.export --fetch_converter` (CI does)")
    out = export(run, tmp_path / "g", "gguf", "f16")
    check_gguf_tokenizer(out / "model-f16.gguf", smol_tokenizer)  # the run's own: accepted
    other = smol_tokenizer.__class__.from_pretrained(smol_tokenizer.name_or_path)
    other.add_tokens(["<an_extra_token>"])
    with pytest.raises(ValueError, match="vocabulary has 49152 tokens, the run's tokenizer 49153"):
        check_gguf_tokenizer(out / "model-f16.gguf", other)


def test_refusals_come_before_any_model_loads(run, tmp_path, capsys, monkeypatch):
    import ric.export

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    monkeypatch.setattr(ric.export, "merged_model", no_loading)

    def refused(*argv) -> str:
        assert main(["export", *map(str, argv)]) == 2
        return capsys.readouterr().err

    assert "q8_0 is a GGUF type" in refused(run, tmp_path / "a", "--outtype", "q8_0")
    assert "--outtype: 'int4'" in refused(run, tmp_path / "a", "--format", "gguf", "--outtype", "int4")
    assert "one model for every preference" in refused(run, tmp_path / "a", "--preference", "0.5,0.5")
    assert "would replace the run itself" in refused(run, run, "--overwrite")
    # an unfinished run: its last training stage still running
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    state = json.loads((unfinished / "run_state.json").read_text())
    state["stages"]["train"]["status"] = "running"
    (unfinished / "run_state.json").write_text(json.dumps(state))
    assert "stage train has not finished" in refused(unfinished, tmp_path / "a")
    # the converter nowhere to be found
    monkeypatch.setenv("RIC_LLAMA_CPP_SOURCE", str(tmp_path))
    if importlib.util.find_spec("sentencepiece") is not None:
        monkeypatch.setattr(ric.export, "merged_model", lambda plan: (None, None, None))
        assert "no convert_hf_to_gguf.py" in refused(run, tmp_path / "b", "--format", "gguf")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_prt_and_text_to_image_runs_are_refused_by_name(tmp_path, capsys):
    for method, words in (("prt", "two models combined"), ("diffusion", "not a language model")):
        folder = tmp_path / method
        folder.mkdir()
        (folder / "ric_run.json").write_text(
            json.dumps({"base_model": "x", "rewards": ["a", "b"], "template": "chat", "method": method})
        )
        assert main(["export", str(folder), str(tmp_path / f"{method}-out")]) == 2
        assert words in capsys.readouterr().err


def test_a_morlhf_policy_and_a_soups_mix_are_exported(tmp_path_factory, tiny_model_dir, tmp_path, capsys):
    """MORLHF: --point or the policy nearest to --preference; Soups: the mix at --preference (required). Each
    export answers as the run's generator does under that condition."""
    from transformers import AutoModelForCausalLM

    from ric.methods import get_method

    for method in ("morlhf", "soups"):
        run = build_run(tmp_path_factory.mktemp(f"export-{method}"), tiny_model_dir, method)
        if method == "morlhf":
            assert main(["export", str(run), str(tmp_path / "x")]) == 2
            assert "--point or --preference" in capsys.readouterr().err
            assert main(["export", str(run), str(tmp_path / "x"), "--point", "w_9"]) == 2
            assert "its policies are w_0.00_1.00, w_1.00_0.00" in capsys.readouterr().err
        else:
            assert main(["export", str(run), str(tmp_path / "x"), "--point", "w_1.00_0.00"]) == 2
            assert "no trained points" in capsys.readouterr().err
        out = tmp_path / method
        assert main(["export", str(run), str(out), "--preference", "0.8,0.2"]) == 0
        point = json.loads((out / "ric_serving.json").read_text())["point"]
        assert point["asked"] == [0.8, 0.2]
        assert point["policy"] == ("w_1.00_0.00" if method == "morlhf" else "mix w_0.80_0.20")
        generator = get_method(method).load_generator(run, device="cpu")
        generator.activate(generator.condition(preference=point["preference"]).key)
        ids = torch.tensor([generator.tokenizer("Hello there, how are you?")["input_ids"]])
        merged = AutoModelForCausalLM.from_pretrained(out).eval()
        with torch.no_grad():
            torch.testing.assert_close(merged(input_ids=ids).logits, generator.model(input_ids=ids).logits)
