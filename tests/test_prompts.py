import pytest

from distill.prompts import build_messages, join_completion, render_prompt, split_trace


@pytest.mark.parametrize(
    "completion, reasoning, answer",
    [
        ("<think>\nstep 1\nstep 2\n</think>\n\nSo \\boxed{3}.", "step 1\nstep 2", "So \\boxed{3}."),
        ("<think>\nstill thinking when cut off", "still thinking when cut off", ""),  # truncated
        ("Sure. <think>\nR\n</think>\n\nA", "R", "A"),  # text before <think>
        ("R without opening\n</think>\n\nA", "R without opening", "A"),  # prefill not echoed
        (
            "<think>\na\n</think>\nb\n<think>\nc\n</think>\n\nfinal",
            "a\n</think>\nb\n<think>\nc",
            "final",
        ),
        ("<think>\n</think>\n\n", "", ""),
        ("no tags at all", "", ""),
        ("", "", ""),
        ("<think>\na\n</think>\nb <think> c", "a", "b <think> c"),  # stray opening tag after
    ],
)
def test_split_trace(completion, reasoning, answer):
    assert split_trace(completion) == (reasoning, answer)


def test_join_completion_always_starts_with_think():
    assert join_completion("R\n</think>\n\nA", prefill="<think>\n") == "<think>\nR\n</think>\n\nA"
    assert join_completion("A", reasoning="R\n") == "<think>\nR\n</think>\n\nA"
    assert join_completion("R\n</think>\n\nA") == "<think>\nR\n</think>\n\nA"
    assert join_completion("<think>\nR\n</think>\n\nA") == "<think>\nR\n</think>\n\nA"


def test_build_messages_keeps_braces():
    msgs = build_messages("Find {x | x > 0}", "{problem}\nPut it in \\boxed{}.")
    assert msgs == [{"role": "user", "content": "Find {x | x > 0}\nPut it in \\boxed{}."}]
    assert build_messages("p", "{problem}", system="be brief")[0] == {
        "role": "system",
        "content": "be brief",
    }


class FakeTemplate:
    """A tokenizer whose chat template may or may not already end with the prefill."""

    def __init__(self, suffix: str):
        self.suffix = suffix

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return "U:" + messages[-1]["content"] + "\nA:" + self.suffix


@pytest.mark.parametrize("suffix", ["", "<think>\n", "<think>"])
def test_render_prompt_adds_prefill_once(suffix):
    text = render_prompt(FakeTemplate(suffix), [{"role": "user", "content": "q"}], "<think>\n")
    assert text == "U:q\nA:<think>\n"


def test_render_prompt_with_real_tokenizer(tiny_qwen):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_qwen)
    text = render_prompt(tok, build_messages("1+1?", "{problem}"), "<think>\n")
    assert text == "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n<think>\n"
