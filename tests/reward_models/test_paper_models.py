"""The paper's six reward models, by name, on tiny random stand-ins of the same architectures
(GPT-2 and DeBERTa-v2 classifiers with one label, a BART classifier and the humor model's
DistilBERT with two), saved locally and loaded through the registry by path. The tests check what
each input adapter sends to its model: pair order, bos placement, logit index."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BartConfig,
    BartForSequenceClassification,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    PreTrainedTokenizerFast,
)

from reward_models import get_reward
from reward_models.paper_models import PAPER_REWARD_MODELS

PROMPT = "the post about a cat"
RESPONSE = "a short summary"
INSTRUCTION = "### Instruction: Generate a one-sentence summary of this post. ### Input: {prompt} ### Response:"
WORDS = sorted(set((PROMPT + " " + RESPONSE + " hello world Human Assistant " + INSTRUCTION).split()))


def word_tokenizer(style: str) -> PreTrainedTokenizerFast:
    specials = {
        "gpt2": ["<|endoftext|>"],
        "bart": ["<s>", "</s>", "<pad>", "<unk>"],
        "bert": ["[CLS]", "[SEP]", "[PAD]", "[UNK]"],
    }[style]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    unk = {"gpt2": "<|endoftext|>", "bart": "<unk>", "bert": "[UNK]"}[style]
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if style == "bart":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>",
            pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
        )
    if style == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]"
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )


def save(tmp_path, name, model, tokenizer):
    folder = tmp_path / name
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("reward-models")
    gpt2_tok, bart_tok, bert_tok = word_tokenizer("gpt2"), word_tokenizer("bart"), word_tokenizer("bert")
    n = len(WORDS) + 4
    gpt2 = lambda: GPT2ForSequenceClassification(
        GPT2Config(
            vocab_size=n,
            n_embd=16,
            n_layer=2,
            n_head=2,
            n_positions=64,
            num_labels=1,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    bart = BartForSequenceClassification(
        BartConfig(
            vocab_size=n,
            d_model=16,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            max_position_embeddings=64,
            id2label={0: "no", 1: "yes"},
            pad_token_id=2,
            bos_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=1,
        )
    )
    deberta = DebertaV2ForSequenceClassification(
        DebertaV2Config(
            vocab_size=n,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
            num_labels=1,
            pad_token_id=2,
        )
    )
    distil = DistilBertForSequenceClassification(
        DistilBertConfig(
            vocab_size=n,
            dim=16,
            n_layers=2,
            n_heads=2,
            hidden_dim=32,
            max_position_embeddings=64,
            id2label={0: "no", 1: "yes"},
            pad_token_id=2,
        )
    )
    return {
        "harmless": save(tmp, "harmless", gpt2(), gpt2_tok),
        "helpful": save(tmp, "helpful", gpt2(), gpt2_tok),
        "summary": save(tmp, "summary", gpt2(), gpt2_tok),
        "faithful": save(tmp, "faithful", bart, bart_tok),
        "deberta": save(tmp, "deberta", deberta, bert_tok),
        "humor": save(tmp, "humor", distil, bert_tok),
    }


def ids(scorer, text):
    return scorer.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_registry_knows_the_paper_models_with_their_hub_ids():
    assert PAPER_REWARD_MODELS["harmless"]["model"] == "Ray2333/gpt2-large-harmless-reward_model"
    assert PAPER_REWARD_MODELS["humor"] == {
        "model": "mohameddhiab/humor-no-humor",
        "input_format": "response",
        "logit_index": 1,
    }
    assert PAPER_REWARD_MODELS["faithful"]["input_format"] == "response_prompt"
    assert PAPER_REWARD_MODELS["summary"]["input_format"] == "response_bos_prompt"


@pytest.mark.parametrize("name", ["harmless", "helpful"])
def test_gpt2_pair_rewards_read_prompt_then_response(stand_ins, name):
    scorer = get_reward(name, model=stand_ins[name])
    enc = scorer.encode([PROMPT], [RESPONSE])
    assert enc["input_ids"][0].tolist() == ids(scorer, PROMPT) + ids(scorer, RESPONSE)
    assert scorer.logit_index == 0


def test_summary_reward_reads_summary_bos_post(stand_ins):
    scorer = get_reward("summary", model=stand_ins["summary"])
    enc = scorer.encode([PROMPT], [RESPONSE])
    bos = scorer.tokenizer.bos_token_id
    assert enc["input_ids"][0].tolist() == ids(scorer, RESPONSE) + [bos] + ids(scorer, PROMPT)


def test_summary_reward_spacing_under_a_byte_level_bpe(tmp_path, smol_tokenizer):
    """The paper's code reads summary + " " + bos + " " + post; a byte-level BPE (the bundled SmolLM2
    tokenizer, as GPT-2's) gives other ids without the spaces, which a whitespace tokenizer hides."""
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(smol_tokenizer),
        n_embd=8,
        n_layer=1,
        n_head=2,
        n_positions=64,
        num_labels=1,
        pad_token_id=smol_tokenizer.pad_token_id,
    )
    folder = save(tmp_path, "summary-bpe", GPT2ForSequenceClassification(config), smol_tokenizer)
    scorer = get_reward("summary", model=folder)
    post, summary = "My cat ran off today.", "Cat ran off."
    got = scorer.encode([post], [summary])["input_ids"][0].tolist()
    bos = smol_tokenizer.bos_token
    spaced = smol_tokenizer(f"{summary} {bos} {post}", add_special_tokens=False)["input_ids"]
    tight = smol_tokenizer(f"{summary}{bos}{post}", add_special_tokens=False)["input_ids"]
    assert got == spaced and spaced != tight


def test_deberta_reads_the_summary_instruction_prompt_when_declared(stand_ins):
    from reward_models.paper_models import SUMMARY_INSTRUCTION_PROMPT

    assert SUMMARY_INSTRUCTION_PROMPT == INSTRUCTION
    scorer = get_reward("deberta", {"deberta": {"model": stand_ins["deberta"], "prompt_template": INSTRUCTION}})
    t = scorer.tokenizer
    question = INSTRUCTION.replace("{prompt}", PROMPT)
    enc = scorer.encode([PROMPT], [RESPONSE])
    assert enc["input_ids"][0].tolist() == [t.cls_token_id] + ids(scorer, question) + [t.sep_token_id] + ids(
        scorer, RESPONSE
    ) + [t.sep_token_id]
    with pytest.raises(ValueError, match="prompt_template"):
        get_reward("deberta", {"deberta": {"model": stand_ins["deberta"], "prompt_template": "no slot"}})
    with pytest.raises(ValueError, match="unknown field"):
        get_reward("deberta", {"deberta": {"model": "never/loaded", "prompt_templat": INSTRUCTION}})


def test_faithful_reward_reads_text_summary_pair_post_and_logit_1(stand_ins):
    scorer = get_reward("faithful", model=stand_ins["faithful"])
    enc = scorer.encode([PROMPT], [RESPONSE])
    t = scorer.tokenizer
    assert enc["input_ids"][0].tolist() == [t.bos_token_id] + ids(scorer, RESPONSE) + [
        t.eos_token_id,
        t.eos_token_id,
    ] + ids(scorer, PROMPT) + [t.eos_token_id]
    with torch.no_grad():
        logits = scorer.model(**enc).logits
    assert scorer([PROMPT], [RESPONSE])[0] == pytest.approx(logits[0, 1].item(), abs=1e-5)
    assert logits[0, 1].item() != pytest.approx(logits[0, 0].item())


def test_deberta_reward_reads_prompt_response_pair(stand_ins):
    scorer = get_reward("deberta", model=stand_ins["deberta"])
    t = scorer.tokenizer
    enc = scorer.encode([PROMPT], [RESPONSE])
    assert enc["input_ids"][0].tolist() == [t.cls_token_id] + ids(scorer, PROMPT) + [t.sep_token_id] + ids(
        scorer, RESPONSE
    ) + [t.sep_token_id]


def test_humor_reward_reads_the_response_only_with_logit_1(stand_ins):
    scorer = get_reward("humor", model=stand_ins["humor"])
    t = scorer.tokenizer
    enc = scorer.encode([PROMPT], [RESPONSE])
    assert enc["input_ids"][0].tolist() == [t.cls_token_id] + ids(scorer, RESPONSE) + [t.sep_token_id]
    with torch.no_grad():
        expected = scorer.model(**enc).logits[0, 1].item()
    assert scorer(["anything else entirely"], [RESPONSE])[0] == pytest.approx(expected, abs=1e-5)


def test_batches_with_padding_score_like_single_rows(stand_ins):
    for name in ("harmless", "faithful", "deberta"):
        scorer = get_reward(name, model=stand_ins[name], batch_size=3)
        prompts = [PROMPT, "hello", "the cat", PROMPT + " hello world"]
        responses = [RESPONSE, "a summary", "hello world", "short"]
        batched = scorer(prompts, responses)
        single = [scorer([p], [r])[0] for p, r in zip(prompts, responses)]
        assert batched == pytest.approx(single, abs=1e-4), name


def test_truncation_to_the_model_limit(stand_ins):
    scorer = get_reward("harmless", model=stand_ins["harmless"])
    assert scorer.max_length == 64  # n_positions of the stand-in, under the 1024 cap
    enc = scorer.encode([" ".join(["cat"] * 200)], [RESPONSE])
    assert enc["input_ids"].shape[1] == 64


def test_declared_in_a_recipe_by_name_and_path(stand_ins):
    scorer = get_reward("humor", {"humor": {"model": stand_ins["humor"]}})
    assert scorer.input_format == "response" and scorer.logit_index == 1
    custom = get_reward(
        "my_rm", {"my_rm": {"model": stand_ins["deberta"], "input_format": "response_prompt", "logit_index": 0}}
    )
    assert custom.name == "my_rm" and custom.input_format == "response_prompt"


def test_unreachable_hub_reward_model_gives_one_clear_message():
    with pytest.raises(OSError) as info:
        get_reward("my_rm", {"my_rm": {"model": "no-such-org/no-such-reward-model-xyz"}})
    message = str(info.value)
    assert "no-such-org/no-such-reward-model-xyz" in message and "available locally" in message


def test_hh_rlhf_recipe_code_path_on_local_stand_ins(stand_ins, tiny_model_dir, tmp_path):
    """The paper's HH-RLHF recipe, with its hub ids swapped for local stand-ins of the same schema
    and architectures: builder -> scoring with harmless/humor -> SFT -> 11-point evaluation."""
    import json
    from pathlib import Path

    import yaml

    from ric.cli import main

    root = Path(__file__).resolve().parents[2]
    recipe = yaml.safe_load((root / "recipes/hh_rlhf/ric_harmless_helpful.yaml").read_text())
    recipe.update(
        model_name_or_path=str(tiny_model_dir),
        load_in_8bit=False,
        dtype="float32",
        dataset_name=str(Path(__file__).resolve().parents[1] / "assets/hh_rlhf"),
        rewards=["harmless", "humor"],
        reward_models={"harmless": {"model": stand_ins["harmless"]}, "humor": {"model": stand_ins["humor"]}},
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_train_batch_size=4,
        lora_r=4,
        lora_alpha=8,
        num_online_iterations=0,
        max_completion_length=6,
        sampling_batch_size=8,
        save_steps=100,
        max_length=256,
    )
    path = tmp_path / "hh.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path)]) == 0
    run = tmp_path / "run"
    prepared = json.loads((run / "data/prepare_stats.json").read_text())
    assert prepared["source"].startswith("hh_rlhf builder") and prepared["rows"] > 20
    stats = json.loads((run / "train_stats.json").read_text())
    assert stats["example_prompt"].endswith("\n\nAssistant:") and "<rm1_score>" in stats["example_prompt"]
    assert stats["example_prompt"].count("\n\nAssistant:") >= 1
    pareto = json.loads((run / "eval/pareto.json").read_text())
    assert len(pareto["points"]) == 11 and pareto["num_prompts"] == 3 and pareto["rewards"] == ["harmless", "humor"]


def test_summary_pooling_first_pad_and_last_token_on_a_gpt2_with_pad_equal_to_bos(stand_ins):
    """pad id = bos id (GPT-2's 50256): transformers <= 4.47 scored at the token before the first pad id,
    the end of the summary, so the post did not count; today's transformers score at the last non-pad token."""
    from transformers import AutoModelForSequenceClassification

    first = get_reward("summary", model=stand_ins["summary"], pooling="first_pad")
    last = get_reward("summary", model=stand_ins["summary"], pooling="last_token")
    auto = get_reward("summary", model=stand_ins["summary"])
    assert (first.pooling, last.pooling, auto.pooling) == ("first_pad", "last_token", "first_pad")
    posts = [PROMPT, "hello world"]
    summaries = [RESPONSE, RESPONSE]
    model = AutoModelForSequenceClassification.from_pretrained(stand_ins["summary"]).eval()
    with torch.inference_mode():
        alone = model(**last.tokenizer([RESPONSE], return_tensors="pt")).logits[0, 0].item()
        whole = model(**last.encode(posts[:1], summaries[:1])).logits[0, 0].item()
    got_first = first(posts, summaries)
    assert got_first == pytest.approx([alone, alone], abs=1e-5), "first_pad reads the summary alone"
    assert last(posts[:1], summaries[:1]) == pytest.approx([whole], abs=1e-5)
    assert abs(whole - alone) > 1e-4, "the post changes the last-token score (the check can fail)"
    assert last(posts, summaries)[0] != pytest.approx(last(posts, summaries)[1], abs=1e-6)


def test_pooling_auto_without_a_configured_pad_and_a_bad_pooling(tmp_path, stand_ins):
    torch.manual_seed(0)
    tokenizer = word_tokenizer("gpt2")
    config = GPT2Config(vocab_size=len(WORDS) + 4, n_embd=8, n_layer=1, n_head=2, n_positions=64, num_labels=1)
    folder = save(tmp_path, "no-pad", GPT2ForSequenceClassification(config), tokenizer)
    assert get_reward("summary", model=folder).pooling == "last_token"
    with pytest.raises(ValueError, match="pooling: unknown 'middle'"):
        get_reward("summary", model=folder, pooling="middle")
    with pytest.raises(ValueError, match="pooling: first_pad reads a decoder-only classifier"):
        get_reward("faithful", model=stand_ins["faithful"], pooling="first_pad")
