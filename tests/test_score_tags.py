import pytest

from ric import add_score_tags, parse_score_tags
from ric.score_tags import ASSISTANT_MARKER, response_marker, strip_suffix


def paper_code_tagged(prompt, scores, marker="\n\nAssistant:"):
    """The public RiC code's expression for a tagged HH prompt, restated as the specification."""
    text = prompt.rstrip(marker) + " "  # noqa: B005 (the character set, as the paper's code)
    for i, score in enumerate(scores, start=1):
        text += f"<rm{i}_score>" + " " + str(round(score, 1)) + " "
    return text + marker


@pytest.mark.parametrize("scores", [[1.26, -0.43], [0.5, -1.3, 2.0], [-0.04, 3.0]])
def test_assistant_template_is_the_paper_codes_byte_for_byte(scores):
    # an HH-RLHF prompt as the builder (and the paper's code) writes it: a space before the marker
    prompt = "\n\nHuman: How do I bake bread? \n\nAssistant:"
    tagged = add_score_tags(prompt, scores)
    assert tagged == paper_code_tagged(prompt, scores)
    assert add_score_tags(prompt, None) == prompt
    assert add_score_tags(prompt, [1.26, -0.43]) == (
        "\n\nHuman: How do I bake bread?  <rm1_score> 1.3 <rm2_score> -0.4 \n\nAssistant:"
    )
    assert "<rm1_score> -0.0" in add_score_tags(prompt, [-0.04]), "str(round(-0.04, 1)), as the paper's code"


def test_bare_request_is_wrapped_as_a_human_turn():
    assert add_score_tags("Hi", None) == "\n\nHuman: Hi \n\nAssistant:"
    assert add_score_tags("Hi", [0.0]) == "\n\nHuman: Hi  <rm1_score> 0.0 \n\nAssistant:"


def test_summary_template_exact_format():
    # the paper's code: its untagged prompt, the response marker stripped (as a character set), tags
    untagged = "### Instruction: Generate a one-sentence summary of this post. ### Input: My cat ate my homework. "
    untagged += "### Response: "
    expected = untagged.rstrip("### Response:") + " " + "<rm1_score> 0.5 " + "<rm2_score> 2.0 " + "### Response:"  # noqa: B005
    assert add_score_tags("My cat ate my homework.", [0.5, 2.04], template="summary") == expected
    tagged = add_score_tags("My cat ate my homework.", [0.5, 2.04], template="summary")
    assert tagged == (
        "### Instruction: Generate a one-sentence summary of this post. ### Input: My cat ate my homework."
        " <rm1_score> 0.5 <rm2_score> 2.0 ### Response:"
    )


def test_marker_is_stripped_as_a_suffix_not_a_character_set():
    # str.rstrip("\n\nAssistant:") would also eat the trailing "tint:" characters of the prompt.
    prompt = "\n\nHuman: name a paint tint:\n\nAssistant:"
    assert "Assistant:".join(["x"]) == "x"
    assert prompt.rstrip(ASSISTANT_MARKER) != "\n\nHuman: name a paint tint:"
    tagged = add_score_tags(prompt, [1.0])
    assert tagged == "\n\nHuman: name a paint tint: <rm1_score> 1.0 \n\nAssistant:"
    assert strip_suffix("abcAssistant:", "Assistant:") == "abc"
    assert strip_suffix("abc", "Assistant:") == "abc"


@pytest.mark.parametrize("template", ["assistant", "summary"])
def test_round_trip(template):
    prompt = add_score_tags("Is it going to rain?", None, template)
    tagged = add_score_tags(prompt, [-3.14, 0.06, 2.0], template)
    stripped, scores = parse_score_tags(tagged)
    assert stripped == prompt
    assert scores == [-3.1, 0.1, 2.0]
    assert tagged.endswith(response_marker(template))


def test_chat_template_puts_tags_in_the_user_turn(smol_tokenizer):
    tagged = add_score_tags("How do I brew tea?", [1.0, -0.5], "chat", smol_tokenizer)
    assert "<|im_start|>user\nHow do I brew tea? <rm1_score> 1.0 <rm2_score> -0.5<|im_end|>" in tagged
    assert tagged.endswith("<|im_start|>assistant\n")
    assert response_marker("chat", smol_tokenizer) == "<|im_start|>assistant\n"
    plain, scores = parse_score_tags(tagged)
    assert plain == add_score_tags("How do I brew tea?", None, "chat", smol_tokenizer) and scores == [1.0, -0.5]


def test_chat_template_needs_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        add_score_tags("hi", [1.0], "chat")


def test_unknown_template():
    with pytest.raises(ValueError, match="template"):
        add_score_tags("hi", [1.0], "alpaca")
