"""PRT: the loss is the cross-entropy of log_softmax(base) + r, only r learns, an r trained on one
architecture steers another of the same vocabulary, another vocabulary is refused, and the steered
decoders (generate_batched's and ric serve's) give what a step-by-step recomputation gives."""

import asyncio

import pytest

from ric.recipe import RecipeError
from tests.helpers import tiny_model


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory, smol_tokenizer):
    """A tiny Qwen2 (another architecture) with the same tokenizer as the tiny Llama."""
    path = tmp_path_factory.mktemp("tiny-qwen2")
    tiny_model("qwen2", smol_tokenizer, seed=1).save_pretrained(path)
    smol_tokenizer.save_pretrained(path)
    return path


def test_the_loss_is_the_cross_entropy_of_log_softmax_base_plus_r():
    import torch
    import torch.nn.functional as F

    from ric.prt_trainer import prt_loss

    torch.manual_seed(0)
    base, reward = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    labels[0, :2] = -100  # the prompt: no loss
    loss, _ = prt_loss(base, reward, labels)
    combined = F.log_softmax(base, -1) + reward
    expected = F.cross_entropy(combined[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(loss, expected, atol=1e-6)
    # the entropy term: -alpha * mean H(softmax(r)) over the same positions
    with_entropy, metrics = prt_loss(base, reward, labels, entropy_coef=0.1)
    p = F.softmax(reward[:, :-1], -1)
    entropy = -(p * p.log()).sum(-1)[labels[:, 1:] != -100].mean()
    assert torch.allclose(with_entropy, expected - 0.1 * entropy, atol=1e-6)
    assert metrics["reward_entropy"] == pytest.approx(float(entropy), rel=1e-5)


def prt_args(tmp_path, **changes):
    from ric.prt_config import PRTConfig

    settings = dict(
        output_dir=str(tmp_path / "prt"),
        rewards=["positivity", "conciseness"],
        template="chat",
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=0.01,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        max_length=64,
    )
    return PRTConfig(**{**settings, **changes})


def pattern_rows(n=8, response="ok ok ok ok ok ok"):
    import datasets

    return datasets.Dataset.from_dict(
        {
            "prompt": [f"Question {i}: tell me something." for i in range(n)],
            "response": [response] * n,
            "normalized_scores": [[0.5, -0.5]] * n,
        }
    )


def test_training_moves_r_and_the_base_gets_no_gradient(tmp_path, smol_tokenizer):
    import torch
    from peft import LoraConfig

    from ric.prt_trainer import PRTTrainer

    base = tiny_model("llama", smol_tokenizer)
    reward = tiny_model("llama", smol_tokenizer)  # r initialised from the base: the same weights
    reward.load_state_dict(base.state_dict())
    before_base = {k: v.clone() for k, v in base.state_dict().items()}
    trainer = PRTTrainer(
        reward,
        args=prt_args(tmp_path, max_steps=3),
        train_rows=pattern_rows(),
        processing_class=smol_tokenizer,
        base_model=base,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
    )
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert all(p.grad is None and not p.requires_grad for p in base.parameters())
    assert all(torch.equal(before_base[k], v) for k, v in base.state_dict().items())
    moved = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, lora_before[n])]
    assert moved and all("lora_" in n for n in moved)


def test_an_r_trained_on_llama_steers_a_qwen2_of_the_same_vocabulary(tmp_path, smol_tokenizer):
    from ric.generation import generate_batched
    from ric.prt_trainer import PRTTrainer
    from ric.steering import check_same_vocabulary, prt_policy

    llama = tiny_model("llama", smol_tokenizer)
    reward = tiny_model("llama", smol_tokenizer)
    reward.load_state_dict(llama.state_dict())
    trainer = PRTTrainer(
        reward,
        args=prt_args(tmp_path, max_steps=30, learning_rate=0.03),
        train_rows=pattern_rows(),
        processing_class=smol_tokenizer,
        base_model=llama,
    )  # r trained fully
    trainer.train()
    qwen = tiny_model("qwen2", smol_tokenizer, seed=1)
    check_same_vocabulary(smol_tokenizer, smol_tokenizer, reward, qwen, "qwen2")
    prompts = [f"Question {i}: tell me something." for i in (100, 101)]
    from ric.score_tags import add_score_tags

    texts = [add_score_tags(p, [0.5, -0.5], "chat", smol_tokenizer, None) for p in prompts]
    settings = dict(do_sample=False, max_new_tokens=6, template="chat", progress=False)
    alone = generate_batched(qwen, smol_tokenizer, texts, **settings).texts
    steered = generate_batched(prt_policy(qwen, reward.eval()), smol_tokenizer, texts, **settings).texts
    assert all("ok ok" not in t for t in alone), alone
    assert all(t.startswith("ok ok ok") for t in steered), steered


def test_a_base_of_another_vocabulary_or_width_is_refused(smol_tokenizer):
    import copy

    from ric.steering import check_same_vocabulary

    reward = tiny_model("llama", smol_tokenizer)
    other = copy.deepcopy(smol_tokenizer)
    other.add_tokens(["<my-new-token>"])
    with pytest.raises(RecipeError, match=r"--base other: its vocabulary differs from r's .*1 extra tokens"):
        check_same_vocabulary(smol_tokenizer, other, reward, reward, "other")
    wider = tiny_model("qwen2", smol_tokenizer, vocab_size=len(smol_tokenizer) + 64)
    with pytest.raises(RecipeError, match=f"its logits have {len(smol_tokenizer) + 64} entries, r's"):
        check_same_vocabulary(smol_tokenizer, smol_tokenizer, reward, wider, "wide")


def prt_mix(base, reward):
    import torch

    return lambda ids: torch.log_softmax(base(ids).logits[:, -1].float(), -1) + reward(ids).logits[:, -1].float()


def eft_mix(new_base, tuned, old_base):
    import torch

    def mix(ids):
        lp = [torch.log_softmax(m(ids).logits[:, -1].float(), -1) for m in (new_base, tuned, old_base)]
        return lp[0] + lp[1] - lp[2]

    return mix


def naive_greedy(mix, tokenizer, text, steps):
    """Greedy tokens of `mix(ids)` (the next-token logits), the whole sequence recomputed at every step."""
    import torch

    ids = tokenizer([text], return_tensors="pt")["input_ids"]
    out = []
    with torch.inference_mode():
        for _ in range(steps):
            logits = mix(ids)
            token = int(logits.argmax(-1))
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


@pytest.fixture(scope="module")
def wide_pair(smol_tokenizer):
    """A base and an r of two architectures whose greedy tokens vary (wide random initialisation)."""
    base = tiny_model("qwen2", smol_tokenizer, seed=3, initializer_range=1.0)
    reward = tiny_model("llama", smol_tokenizer, seed=4, initializer_range=1.0)
    return base, reward


@pytest.mark.parametrize("kind", ["prt", "eft"])
def test_the_steered_decode_equals_a_step_by_step_recomputation(wide_pair, smol_tokenizer, kind):
    from ric.steering import eft_policy, prt_policy

    base, reward = wide_pair
    old = tiny_model("llama", smol_tokenizer, seed=5, initializer_range=1.0)
    models = (base, reward) if kind == "prt" else (base, reward, old)
    policy = (prt_policy if kind == "prt" else eft_policy)(*models)
    mix = (prt_mix if kind == "prt" else eft_mix)(*models)
    prompts = ["How do I bake bread?", "Tea?"]
    smol_tokenizer.padding_side = "left"
    enc = smol_tokenizer(prompts, return_tensors="pt", padding=True)
    out = policy.generate(**enc, max_new_tokens=8, pad_token_id=smol_tokenizer.pad_token_id)
    new = out[:, enc["input_ids"].shape[1] :].tolist()
    for prompt, ids in zip(prompts, new):
        assert ids == naive_greedy(mix, smol_tokenizer, prompt, 8)
    assert len({t for ids in new for t in ids}) > 4, "the greedy tokens vary (the check can fail)"


def test_ric_serve_decodes_a_prt_policy_with_rows_leaving_and_joining(wide_pair, smol_tokenizer):
    """The server's decode loop (rows leaving the batch, rows joining it) on the two-model cache."""
    from ric.run_info import RunInfo
    from ric.server.batching import BatchingEngine, GenRequest, StreamTap
    from ric.steering import PRTGenerator, prt_policy

    info = RunInfo(base_model="x", rewards=["a", "b"], template="chat", method="prt", score_low=[-1, -1])
    info.score_high = [1, 1]
    generator = PRTGenerator(prt_policy(*wide_pair), smol_tokenizer, info)
    engine = BatchingEngine(generator, max_batch_size=8)
    engine.close()
    loop = asyncio.new_event_loop()
    condition = generator.condition(preference=[0.3, 0.7])

    def requests(prompts, budgets):
        return [
            GenRequest(generator.format(p, condition), condition, n, 0.0, 1.0, None, loop, asyncio.Queue())
            for p, n in zip(prompts, budgets)
        ]

    first = requests(["How do I bake bread?", "Tea?"], [3, 9])
    joining = requests(["Tell me, in a few words, why people keep cats and dogs at home?"], [6])
    for request in joining:
        engine.waiting.put(request)
    tap = StreamTap(first, smol_tokenizer, engine.eos_ids, engine.stop_markers)
    engine._decode(tap)
    base, reward = wide_pair
    for row, request in enumerate(tap.requests):
        expected = naive_greedy(prt_mix(base, reward), smol_tokenizer, request.text, request.max_tokens)
        expected = expected[: next((k for k, t in enumerate(expected) if t in engine.eos_ids), len(expected))]
        assert tap.ids[row] == expected, f"row {row} differs from its own step-by-step decode"
    assert len(tap.requests) == 3
    loop.close()


@pytest.fixture()
def prt_recipe(tiny_recipe):
    from tests.helpers import update_recipe

    update_recipe(tiny_recipe, method="prt")
    return tiny_recipe


def test_a_prt_recipe_runs_and_r_steers_another_base_from_the_commands(prt_recipe, qwen_dir, capsys):
    import json

    from ric.cli import main
    from ric.rundir import read_json
    from tests.helpers import run_dir_of

    run = run_dir_of(prt_recipe)
    assert main(["run", str(prt_recipe)]) == 0
    assert read_json(run / "ric_run.json")["method"] == "prt" and (run / "adapter/adapter_config.json").exists()
    state = read_json(run / "run_state.json")["stages"]
    assert [s for s in state if state[s]["status"] == "done"] == ["prepare", "train", "evaluate"]
    assert read_json(run / "compute.json")["stages"]["train"]["optimizer_steps"] == 3
    pareto = read_json(run / "eval/pareto.json")
    assert pareto["method"] == "prt" and len(pareto["points"]) == 11
    assert main(["evaluate", str(run), "--base", str(qwen_dir), "--eval_dir", str(run / "eval_qwen")]) == 0
    other = read_json(run / "eval_qwen/pareto.json")
    assert other["steered_base"] == str(qwen_dir) and other["base"]["csv"] == "base.csv"
    capsys.readouterr()
    args = ["generate", str(run), "--preference", "0.2,0.8", "--max_new_tokens", "4", "--json", "hi"]
    assert main(args + ["--base", str(qwen_dir)]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["targets"] and answer["preference"] == [0.2, 0.8]
    assert main(["generate", str(run), "--adapter", "x", "--preference", "0.2,0.8", "hi"]) == 2
    assert "--adapter: applies to ric runs only; this is a prt run" in capsys.readouterr().err


def test_prt_refuses_a_base_of_another_vocabulary_from_the_command(prt_recipe, tmp_path, smol_tokenizer, capsys):
    from ric.cli import main
    from tests.helpers import run_dir_of, update_recipe

    update_recipe(prt_recipe, max_steps=1, eval_num_prompts=1)
    run = run_dir_of(prt_recipe)
    assert main(["prepare", str(prt_recipe)]) == 0 and main(["train", str(prt_recipe)]) == 0
    other = tmp_path / "other-vocab"
    tokenizer = smol_tokenizer.__class__.from_pretrained(str(run / "adapter"))
    tokenizer.add_tokens(["<unseen>"])
    tiny_model("qwen2", tokenizer).save_pretrained(other)
    tokenizer.save_pretrained(other)
    assert main(["generate", str(run), "--base", str(other), "--preference", "0.5,0.5", "hi"]) == 2
    assert f"--base {other}: its vocabulary differs from r's" in capsys.readouterr().err


def test_prt_recipe_keys_are_checked(tmp_path):
    from tests.helpers import parse_run_args

    def parse(**keys):
        path = tmp_path / "r.yaml"
        import yaml

        path.write_text(yaml.safe_dump({"method": "prt", "output_dir": "x", **keys}))
        return parse_run_args([], path)

    (model_args, _, args, _), _ = parse(use_peft=False, prt_entropy_coef=0.01)
    assert not model_args.use_peft and args.prt_entropy_coef == 0.01
    with pytest.raises(RecipeError, match="num_online_iterations: a PRT run has no online stage"):
        parse(num_online_iterations=1)
    with pytest.raises(RecipeError, match="prt_entropy_coef must be >= 0"):
        parse(prt_entropy_coef=-1.0)
    with pytest.raises(RecipeError, match="prt_reward_init = 'half' is not one of"):
        parse(prt_reward_init="half")
    with pytest.raises(RecipeError, match="use_peft: this method trains a LoRA adapter"):
        parse_run_args([], _write(tmp_path, {"output_dir": "x", "use_peft": False}))


def _write(tmp_path, mapping):
    import yaml

    path = tmp_path / "ric.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return path


def test_zero_head_starts_from_the_base_policy_and_reloads_trained(prt_recipe):
    """`prt_reward_init: zero_head`: r's logits are 0 before training (the policy is the base's), its new
    output layer trains beside the LoRA and comes back when the run is loaded."""
    import torch

    from ric.cli import main
    from ric.methods import METHODS
    from ric.models import load_causal_lm
    from ric.prt_trainer import zero_output_layer
    from tests.helpers import run_dir_of, update_recipe

    update_recipe(prt_recipe, prt_reward_init="zero_head", max_steps=2)
    run = run_dir_of(prt_recipe)
    assert main(["prepare", str(prt_recipe)]) == 0 and main(["train", str(prt_recipe)]) == 0
    generator = METHODS["prt"].load_generator(run)
    ids = generator.tokenizer(["How do I boil an egg?"], return_tensors="pt")["input_ids"]
    fresh = load_causal_lm(generator.info.base_model, device="cpu")
    zero_output_layer(fresh)
    with torch.inference_mode():
        assert torch.count_nonzero(fresh(ids).logits) == 0
        trained = generator.model.models[1](ids).logits
    assert torch.count_nonzero(trained) > 0, "the output layer trained and was loaded back"


def test_a_fully_trained_r_is_saved_as_a_model_and_steers(prt_recipe, qwen_dir):
    """`use_peft: false`: r trains every weight, RUN_DIR/reward holds it as a model folder, and it loads back."""
    import torch

    from ric.cli import main
    from ric.methods import METHODS
    from ric.rundir import read_json
    from tests.helpers import run_dir_of, update_recipe

    update_recipe(prt_recipe, use_peft=False, max_steps=2)
    run = run_dir_of(prt_recipe)
    assert main(["prepare", str(prt_recipe)]) == 0 and main(["train", str(prt_recipe)]) == 0
    assert read_json(run / "ric_run.json")["adapter"] == "reward" and (run / "reward/model.safetensors").exists()
    generator = METHODS["prt"].load_generator(run, base=str(qwen_dir))
    base, reward = generator.model.models
    assert base.config.model_type == "qwen2" and reward.config.model_type == "llama"
    trained = {k: v for k, v in reward.state_dict().items()}
    fresh = type(reward).from_pretrained(generator.info.base_model).state_dict()
    assert any(not torch.equal(trained[k], fresh[k]) for k in fresh), "r's own weights moved in training"
    out = generator.generate(["hi"], preference=[0.5, 0.5], max_new_tokens=3)
    assert out[0]["targets"] is not None


def test_prt_trains_r_beside_an_8bit_base(prt_recipe, monkeypatch):
    """The base in 8-bit (bitsandbytes on the CPU): it stays quantized and frozen, r's LoRA trains in fp32."""
    import torch
    from safetensors.torch import load_file

    from ric.prt_trainer import PRTTrainer
    from tests.helpers import run_dir_of, update_recipe

    update_recipe(prt_recipe, load_in_8bit=True, max_steps=2)
    run = run_dir_of(prt_recipe)
    seen = {}
    original = PRTTrainer.compute_loss

    def spy(self, model, inputs, **kwargs):
        seen["base_8bit"] = bool(getattr(self.prt_base, "is_loaded_in_8bit", False))
        seen["base_trainable"] = sum(p.requires_grad for p in self.prt_base.parameters())
        return original(self, model, inputs, **kwargs)

    from ric.cli import main

    monkeypatch.setattr(PRTTrainer, "compute_loss", spy)  # observes the real trainer, changes nothing
    assert main(["prepare", str(prt_recipe)]) == 0 and main(["train", str(prt_recipe)]) == 0
    assert seen == {"base_8bit": True, "base_trainable": 0}
    weights = load_file(str(run / "adapter/adapter_model.safetensors"))
    assert weights and all(w.dtype == torch.float32 for w in weights.values())
    assert any(torch.count_nonzero(w) for k, w in weights.items() if "lora_B" in k), "r's LoRA moved"
