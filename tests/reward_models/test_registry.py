import pytest

from reward_models import FunctionScorer, RewardScorer, check_reward_names, get_reward, list_rewards, load_rewards


def test_builtin_rewards_are_listed():
    names = list_rewards()
    for name in ("positivity", "relevance", "conciseness", "readability", "sequence_classifier"):
        assert name in names


def test_positivity_reads_the_response_only():
    scorer = get_reward("positivity")
    assert scorer.input_format == "response"
    happy, sad = scorer(["x", "x"], ["What a wonderful, lovely day!", "This is terrible and sad."])
    assert happy > 0.5 > -0.5 > sad
    # the prompt does not matter
    assert scorer(["I hate everything"], ["What a wonderful, lovely day!"])[0] == happy


def test_conciseness_and_readability():
    conc = get_reward("conciseness")
    short, long = conc(["q", "q"], ["Yes.", " ".join(["word"] * 100)])
    assert short > 0.9 and long == pytest.approx(1 / 3)
    read = get_reward("readability")
    easy, hard = read(
        ["q", "q"],
        [
            "The cat sat. The dog ran.",
            "Incomprehensibility characterises institutionalised bureaucratic considerations.",
        ],
    )
    assert easy > hard


def test_relevance_uses_the_bundled_minilm():
    scorer = get_reward("relevance")
    on_topic, off_topic = scorer(
        ["How do I brew green tea?", "How do I brew green tea?"],
        ["Steep green tea leaves in water at 80 C for two minutes.", "The stock market fell sharply on Tuesday."],
    )
    assert on_topic > off_topic + 0.2
    assert -1.0 <= off_topic <= 1.0 and -1.0 <= on_topic <= 1.0


def test_batches_give_the_same_scores_as_one_by_one():
    scorer = get_reward("relevance", batch_size=3)
    prompts = [f"Tell me about topic {i}" for i in range(7)]
    responses = [f"Topic {i} is about {'cats' if i % 2 else 'physics'}." for i in range(7)]
    batched = scorer(prompts, responses)
    single = [scorer([p], [r])[0] for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(single, abs=1e-5)


def test_unknown_reward_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        check_reward_names(["positivty"])
    assert "positivity" in str(info.value) and "relevance" in str(info.value)
    with pytest.raises(ValueError, match="empty"):
        check_reward_names([])
    with pytest.raises(ValueError, match="distinct"):
        check_reward_names(["positivity", "positivity"])


def word_count(prompts, responses):
    return [float(len(r.split())) for r in responses]


def trl_style(completions, **kwargs):
    return [float(len(c)) for c in completions]


class Shouting(RewardScorer):
    name = "shouting"
    input_format = "response"

    def _score_batch(self, prompts, responses):
        return [sum(ch.isupper() for ch in r) / max(1, len(r)) for r in responses]


def test_user_rewards_by_dotted_path():
    scorer = get_reward("tests.reward_models.test_registry:word_count")
    assert isinstance(scorer, FunctionScorer) and scorer.name == "word_count"
    assert scorer(["a", "b"], ["one two", "x"]) == [2.0, 1.0]
    assert get_reward("tests.reward_models.test_registry:trl_style")(["p"], ["abc"]) == [3.0]
    shout = get_reward("tests.reward_models.test_registry:Shouting")
    assert shout.name == "Shouting" and shout(["p"], ["AB"]) == [1.0]
    with pytest.raises(ValueError, match="no attribute"):
        get_reward("tests.reward_models.test_registry:nothing_here")
    with pytest.raises(ValueError, match="cannot import"):
        get_reward("no_such_module_xyz:fn")


def test_declared_reward_models_check_their_fields(tmp_path):
    with pytest.raises(ValueError, match="unknown field"):
        get_reward("mine", {"mine": {"model": str(tmp_path), "input_fromat": "response"}})


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="one prompt per response"):
        get_reward("positivity")(["a"], ["b", "c"])


def test_load_rewards_keeps_order():
    scorers = load_rewards(["conciseness", "positivity"])
    assert [s.name for s in scorers] == ["conciseness", "positivity"]
