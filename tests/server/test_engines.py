"""`ric serve --engine llama.cpp`: ric exports the run to GGUF, starts llama-cpp-python's server as a child on
a loopback port and fronts it (a real llama.cpp server, driven by the official openai client); the child's death
is reported, Ctrl-C stops it. `ric evaluate --engine llama.cpp` answers the grid through it. Refusals."""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import httpx
import pytest

from ric.cli import main
from tests.server.support import Server
from tests.server.test_app import MESSAGES, client, expected_targets

needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("sentencepiece") is None,
    reason='llama-cpp-python and sentencepiece are not installed (pip install "ric[llamacpp]")',
)


def child_pids(port_of_ric: int, server: Server) -> list[int]:
    """The llama.cpp server ric started (its upstream URL is in /stats)."""
    upstream = server.stats()["upstream"]
    port = upstream.rsplit(":", 1)[1].split("/")[0]
    found = subprocess.run(["pgrep", "-f", f"llama_cpp.server.*--port {port}"], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_llama_cpp
def test_llama_cpp_engine_fronted_by_ric(ric_run):
    srv = Server(ric_run, "--engine", "llama.cpp", "--outtype", "f32")
    try:
        api = client(srv)
        answer = api.chat.completions.create(
            model="run", messages=MESSAGES, max_tokens=6, temperature=0, extra_body={"preference": [0.2, 0.8]}
        )
        assert answer.ric["targets"] == expected_targets(ric_run, [0.2, 0.8]), "ric mapped the preference"
        assert answer.choices[0].finish_reason in ("stop", "length") and answer.usage.completion_tokens > 0
        streamed = list(
            api.completions.create(
                model="run", prompt="Name a fruit.", max_tokens=5, stream=True, extra_body={"preference": [0.9, 0.1]}
            )
        )
        assert streamed[0].ric["targets"] == expected_targets(ric_run, [0.9, 0.1])
        assert sum(1 for c in streamed if c.choices and c.choices[0].text) >= 1
        stats = srv.stats()
        assert stats["engine"] == "llama.cpp" and stats["requests"] == 2 and stats["upstream_errors"] == 0
        serving = json.loads((ric_run / "export" / "gguf-f32" / "ric_serving.json").read_text())
        assert serving["model"]["file"] == "model-f32.gguf" and serving["source_fingerprint"]
        # the child dies: /health says so (503), a request gets a clear error, nothing hangs
        (pid,) = child_pids(srv.port, srv)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        health = httpx.get(srv.url + "/health", timeout=5)
        assert health.status_code == 503 and "llama.cpp server exited with code -9" in health.json()["detail"]
        failed = httpx.post(
            srv.url + "/v1/chat/completions", json={"model": "run", "messages": MESSAGES, "max_tokens": 3}, timeout=10
        )
        assert failed.status_code == 500 and "llama.cpp server exited" in failed.json()["error"]["message"]
    finally:
        srv.stop()


@needs_llama_cpp
def test_ctrl_c_stops_the_child_and_the_export_is_reused(ric_run):
    srv = Server(ric_run, "--engine", "llama.cpp", "--outtype", "f32")
    try:
        (pid,) = child_pids(srv.port, srv)
    finally:
        assert srv.stop() == 0
    deadline = time.monotonic() + 20
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pid), "the llama.cpp server stopped with ric"
    assert "using the gguf export in" in srv.log.read_text(), "the cached export of the same weights"


@needs_llama_cpp
def test_evaluate_through_llama_cpp(ric_run):
    assert main(["evaluate", str(ric_run), "--engine", "llama.cpp", "--outtype", "f32"]) == 0
    pareto = json.loads((ric_run / "eval-llama.cpp-f32" / "pareto.json").read_text())
    assert pareto["engine"] == "llama.cpp" and pareto["outtype"] == "f32"
    assert len(pareto["points"]) == 3 and pareto["generation"]["generated_tokens"] > 0
    assert pareto["base"]["mean"], "the base model's answers (in-process) are the reference"


def test_engine_refusals_before_any_model_loads(ric_run, tmp_path_factory, tiny_model_dir, capsys):
    def refused(*argv) -> str:
        assert main([*map(str, argv)]) == 2
        return capsys.readouterr().err

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert "is in use" in refused("serve", ric_run, "--port", taken.getsockname()[1])
    assert "'tgi' is not an engine" in refused("serve", ric_run, "--engine", "tgi")
    assert "--outtype: applies with --engine" in refused("serve", ric_run, "--outtype", "q8_0")
    assert "--dtype: not with --engine" in refused("serve", ric_run, "--engine", "llama.cpp", "--dtype", "bfloat16")
    assert "--upstream: not with" in refused("serve", ric_run, "--engine", "vllm", "--upstream", "http://127.0.0.1:9")
    if importlib.util.find_spec("vllm") is None and shutil.which("vllm") is None:
        assert "vllm is not installed" in refused("serve", ric_run, "--engine", "vllm")
    assert "--adapter: not with --engine" in refused(
        "evaluate", ric_run, "--engine", "llama.cpp", "--adapter", ric_run / "adapter"
    )
    # a run that is not one model: refused with what to do instead
    soups = tmp_path_factory.mktemp("engine-soups") / "run"
    soups.mkdir()
    (soups / "ric_run.json").write_text(
        json.dumps({"base_model": str(tiny_model_dir), "rewards": ["a", "b"], "template": "chat", "method": "soups"})
    )
    assert "use --engine builtin" in refused("serve", soups, "--engine", "llama.cpp")


STAND_IN = '''#!{python}
"""A stand-in for `vllm serve MODEL_DIR --served-model-name NAME --host H --port P [--dtype D]` on a CPU: the
merged Hugging Face export ric hands it, converted by llama.cpp's converter and served by llama-cpp-python's
OpenAI server (a real OpenAI-compatible server; vLLM itself needs CUDA)."""
import os, sys
from pathlib import Path
from ric.export import convert_to_gguf, llama_cpp_converter
args = sys.argv[1:]
assert args[0] == "serve", args
model_dir, value = Path(args[1]), lambda flag: args[args.index(flag) + 1]
gguf = convert_to_gguf(llama_cpp_converter(download=False), model_dir, model_dir.parent / "stand-in.gguf", "f32")
command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
command += ["--model_alias", value("--served-model-name")]
command += ["--host", value("--host"), "--port", value("--port"), "--interrupt_requests", "false"]
os.execv(sys.executable, command)
'''


@needs_llama_cpp
def test_vllm_engine_path_against_a_stand_in_server(ric_run, tmp_path):
    """`--engine vllm`: ric exports the run merged (Hugging Face, bf16), starts `vllm serve` on it as a child and
    fronts it. Here `vllm` on PATH is a stand-in that serves that export with a real OpenAI-compatible server."""
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vllm").write_text(STAND_IN.format(python=sys.executable))
    (bin_dir / "vllm").chmod(0o755)
    srv = Server(ric_run, "--engine", "vllm", env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    try:
        answer = client(srv).chat.completions.create(
            model="run", messages=MESSAGES, max_tokens=4, extra_body={"preference": [0.6, 0.4]}
        )
        assert answer.ric["targets"] == expected_targets(ric_run, [0.6, 0.4]) and answer.usage.completion_tokens > 0
        assert srv.stats()["engine"] == "vllm" and srv.stats()["requests"] == 1
        serving = json.loads((ric_run / "export" / "hf-bf16" / "ric_serving.json").read_text())
        assert serving["model"] == {"format": "hf", "outtype": "bf16"}
        assert "starting vllm serve: " + str(bin_dir / "vllm") + " serve " in srv.log.read_text()
    finally:
        srv.stop()
