"""A real `ric serve` process on a free loopback port, and tiny run directories to serve."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.helpers import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m ric serve RUN_DIR --port P ...` as a subprocess, stopped by Ctrl-C (SIGINT)."""

    def __init__(self, run_dir: Path, *args: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(run_dir).parent / f"serve-{self.port}.log"
        cmd = [sys.executable, "-m", "ric", "serve", str(run_dir), "--port", str(self.port), *args]
        environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        self.handle = open(self.log, "w")
        self.process = subprocess.Popen(cmd, cwd=ROOT, env=environment, stdout=self.handle, stderr=subprocess.STDOUT)
        self.wait_ready()

    def wait_ready(self, timeout: float = 120) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ric serve exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError(f"ric serve did not start in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stats(self, **headers) -> dict:
        import httpx

        return httpx.get(self.url + "/stats", headers=headers, timeout=10).json()

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.handle.close()
        return self.process.returncode


def build_run(folder: Path, model_dir: Path, method: str = "ric") -> Path:
    """A trained tiny run directory (`ric run` with a few steps) of `method`."""
    from ric.cli import main

    rows = [
        {"prompt": f"Question {i}?", "response": r}
        for i, r in enumerate(
            ["Great, lovely!", "No.", "It is bad and sad.", "Fine, thanks.", "Wonderful day!", "Meh."]
        )
    ]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "eval.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Why?", "How?"]))
    recipe = {
        "method": method,
        "model_name_or_path": str(model_dir),
        "dataset_name": str(folder / "train.jsonl"),
        "eval_dataset_name": str(folder / "eval.jsonl"),
        "rewards": ["positivity", "conciseness"],
        "template": "chat",
        "output_dir": str(folder / "run"),
        "max_steps": 2,
        "learning_rate": 0.01,
        "lora_r": 4,
        "lora_alpha": 8,
        "max_completion_length": 6,
        "eval_grid_divisions": 2,
    }
    if method in ("ric", "prt"):
        recipe.update(per_device_train_batch_size=3, sampling_batch_size=4, max_length=128)
    else:
        recipe.update(max_steps=1, per_device_train_batch_size=4, num_generations=4, eval_batch_size=4)
        if method == "morlhf":
            recipe["preferences"] = ["0.0,1.0", "1.0,0.0"]
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path)]) == 0
    return folder / "run"
