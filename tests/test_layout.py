"""The package's shape: `import ric` stays light, imports flow one way, no module shadows the
standard library, and `ric` reaches `reward_models` through its public API only."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own layer's pure/machinery peers; a stage imports machinery
# and the stages listed before it; nothing imports a layer above its own.
PURE = ["ric.preference", "ric.score_tags", "ric.pareto"]
MACHINERY = [
    "ric.rundir",
    "ric.chunks",
    "ric.recipe",
    "ric.data",
    "ric.tasks",
    "ric.tasks.hh_rlhf",
    "ric.tasks.summarize",
    "ric.run_info",
    "ric.models",
    "ric.sampling",
    "ric.scoring",
    "ric.report",
    "ric.generation",
    "ric.vllm_backend",
    "ric.pipeline",
    "ric.config",
]
STAGES = [
    "ric.ric_config",
    "ric.prepare",
    "ric.ric_trainer",
    "ric.online",
    "ric.inference",
    "ric.evaluate",
    "ric.prt_config",
    "ric.prt_trainer",
    "ric.steering",
    "ric.compare",
    "ric.baselines",
    "ric.baselines.config",
    "ric.baselines.rl",
    "ric.baselines.morlhf",
    "ric.baselines.soups",
    "ric.baselines.sft",
    "ric.diffusion.shapes",
    "ric.diffusion.shapes_clip",
    "ric.diffusion",
    "ric.diffusion.config",
    "ric.diffusion.pretrain",
    "ric.diffusion.tiny",
    "ric.diffusion.prepare",
    "ric.diffusion.train",
    "ric.diffusion.generate",
]
TOP = [
    "ric.methods.base",
    "ric.methods",
    "ric.methods.ric",
    "ric.methods.morlhf",
    "ric.methods.soups",
    "ric.methods.sft",
    "ric.methods.prt",
    "ric.methods.diffusion",
    "ric.server",
    "ric.server.app",
    "ric.server.batching",
    "ric.server.engines",
    "ric.server.protocol",
    "ric.server.events",
    "ric.export",
    "ric.cli",
    "ric.__main__",
    "ric",
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every ric module `path` imports, at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from . import x` imports module x
    return found


def rank(module: str) -> tuple[int, int] | None:
    for layer, names in enumerate((PURE, MACHINERY, STAGES, TOP)):
        if module in names:
            return layer, names.index(module)
    return None


SOURCES = sorted((ROOT / "ric").rglob("*.py"))


def test_every_module_has_a_layer():
    assert [module_name(p) for p in SOURCES if rank(module_name(p)) is None] == []


@pytest.mark.parametrize("path", SOURCES, ids=[module_name(p) for p in SOURCES])
def test_imports_flow_one_way(path):
    me = module_name(path)
    my_layer, my_index = rank(me)
    upward = []
    for target in imports_of(path):
        their = rank(target)
        if their is None or target == me:
            continue
        layer, index = their
        if (
            layer > my_layer
            or (layer == my_layer == 2 and index > my_index)
            or (layer == my_layer == 0 and index > my_index)
        ):
            upward.append(target)
    assert upward == [], f"{me} imports {sorted(upward)}, above it"


def test_ric_uses_reward_models_through_its_public_api_and_not_the_reverse():
    for path in SOURCES:
        private = [
            t for t in imports_of(path) if t.startswith("reward_models.") and t.rpartition(".")[0] != "reward_models"
        ]
        assert private == [], f"{module_name(path)} imports {private}"
    for path in (ROOT / "reward_models").rglob("*.py"):
        assert not any(t == "ric" or t.startswith("ric.") for t in imports_of(path)), path


def test_no_module_shadows_the_standard_library():
    names = {p.stem for p in SOURCES} | {p.name for p in (ROOT / "ric").iterdir() if p.is_dir()}
    assert sorted(names & set(sys.stdlib_module_names)) == []


def test_import_ric_does_not_import_torch():
    code = (
        "import sys, ric; assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]


def test_trainer_modules_define_trainers():
    for path in (ROOT / "ric").rglob("*_trainer.py"):
        tree = ast.parse(path.read_text())
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Trainer")]
        assert classes, f"{path.name} defines no Trainer class: rename it"
