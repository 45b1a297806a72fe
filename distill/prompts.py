"""The R1 trace format and the prompts: the one home of both.

R1 usage: no system prompt, every instruction in the user turn, and the response forced to
begin with "<think>\\n" (prefilled). A trace is stored whole: `format_trace` writes it
(`<think>\\n{reasoning}\\n</think>\\n\\n{answer}`) and `split_trace` reads it back into the
reasoning (inside the think block) and the answer (after it). Everything else in distill that
needs the layout (readability checks, training targets, the judge, the synthetic task, RL
rewards) calls these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill.config import option
from distill.errors import UserError

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
PREFILL = THINK_OPEN + "\n"  # what R1's responses are forced to begin with
R1_MATH_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
# R1-Zero's template (DeepSeek-R1 paper, table 1): a base model with no chat template is told
# the format in plain text; the answer goes between <answer> tags.
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    f"{THINK_OPEN} {THINK_CLOSE} and {ANSWER_OPEN} {ANSWER_CLOSE} tags, respectively, i.e., "
    f"{THINK_OPEN} reasoning process here {THINK_CLOSE} {ANSWER_OPEN} answer here "
    f"{ANSWER_CLOSE}. User: {{problem}}. Assistant:"
)


# LiveCodeBench's generation prompt (lcb_runner/prompts/code_generation.py), the one R1's
# LiveCodeBench numbers use. Its system message opens the user turn (R1: no system prompt).
CODE_INTRO = (
    "You are an expert Python programmer. You will be given a question (problem specification) "
    "and will generate a correct Python program that matches the specification and passes all "
    "tests."
)
CODE_WITH_STARTER = (
    "You will use the following starter code to write the solution to the problem and enclose "
    "your code within delimiters."
)
CODE_STDIN = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not "
    "directly test on the sample inputs). Enclose your code within delimiters as follows. Ensure "
    "that when the python program runs, it reads the inputs, runs the algorithm and writes "
    "output to STDOUT."
)
CODE_ANSWER = "### Answer: (use the provided format with backticks)\n\n"
# simple-evals' GPQA prompt (what R1 reports GPQA Diamond with), its "one of ABCD" said for
# any number of options; verify/choice.py reads "Answer: X" back.
CHOICE_INSTRUCTION = (
    "Answer the following multiple choice question. The last line of your response should be "
    "of the following format: 'Answer: $LETTER' (without quotes) where LETTER is one of the "
    "option letters. Think step by step before answering."
)


def code_problem(question: str, starter: str = "", fn_name: str | None = None) -> str:
    """A code problem as LiveCodeBench states it: the question, then the format: complete the
    starter code, or read stdin and write stdout."""
    text = f"### Question:\n{question.strip()}\n\n"
    if starter.strip():
        return text + f"### Format: {CODE_WITH_STARTER}\n```python\n{starter.rstrip()}\n```\n\n"
    if fn_name:  # call-based tests without a stub (some TACO rows)
        return text + (
            f"### Format: Define the function `{fn_name}`, which is called with the inputs as "
            "arguments and must return the answer, and enclose your code within delimiters.\n\n"
        )
    return text + f"### Format: {CODE_STDIN}\n```python\n# YOUR CODE HERE\n```\n\n"


@dataclass
class PromptTemplate:
    """How a problem becomes a chat; R1 usage: no system prompt, instructions in the user turn."""

    user: str = option("{problem}", help="User message; {problem} is replaced by the problem.")
    system: str | None = option(None, help="System prompt (R1 advice: none).")
    prefill: str = option(PREFILL, help="Text the response is forced to begin with.")

    def __post_init__(self) -> None:
        if "{problem}" not in self.user:
            raise ValueError("prompts.*.user must contain {problem}")


def default_prompts() -> dict[str, PromptTemplate]:
    """R1's prompt per domain (what teachers are asked and students are trained on)."""
    return {
        "math": PromptTemplate(user="{problem}\n" + R1_MATH_SUFFIX),
        # `problem` is already LiveCodeBench's question + format (`code_problem`)
        "code": PromptTemplate(user=CODE_INTRO + "\n\n{problem}" + CODE_ANSWER),
        "choice": PromptTemplate(user=CHOICE_INSTRUCTION + "\n\n{problem}"),
        "text": PromptTemplate(user="{problem}"),
    }


def default_prompt(domain: str) -> PromptTemplate:
    prompts = default_prompts()
    if domain not in prompts:
        raise UserError(f"no R1 prompt for domain '{domain}' (known: {', '.join(prompts)})")
    return prompts[domain]


def build_messages(problem: str, user: str, system: str | None = None) -> list[dict[str, str]]:
    """Chat messages for one problem. `user` holds `{problem}`; other braces stay literal."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user.replace("{problem}", problem)})
    return messages


def render_prompt(tokenizer: Any, messages: list[dict[str, str]], prefill: str) -> str:
    """Chat-template text ending with the prefill, whether or not the template adds it.

    R1's newer tokenizer already ends its generation prompt with "<think>\\n"; older
    templates and most others do not. Appending only when missing avoids "<think>" twice.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return with_prefill(text, prefill)


def with_prefill(text: str, prefill: str) -> str:
    """`text` ending with `prefill`, added only where the template did not already add it."""
    if prefill and not text.endswith(prefill):
        stripped = prefill.rstrip("\n")
        text = text + prefill[len(stripped) :] if text.endswith(stripped) else text + prefill
    return text


def format_trace(reasoning: str, answer: str) -> str:
    """The R1 trace layout: the think block, a blank line, then the answer."""
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}"


def split_trace(completion: str) -> tuple[str, str]:
    """(reasoning, answer) of a completion, robust to what teachers really emit.

    - text before the first `<think>` is not reasoning (it stays in the completion only);
    - a missing `</think>` (truncated trace) leaves everything after `<think>` as reasoning
      and no answer;
    - with repeated or stray tags the answer is what follows the *last* `</think>` (the final
      summary a reader sees) and the reasoning is everything before it; the filter's
      `bad_format` check flags such traces;
    - a `</think>` without `<think>` (prefill not echoed) splits there.
    """
    close = completion.rfind(THINK_CLOSE)
    open_ = completion.find(THINK_OPEN)
    if close == -1:
        if open_ == -1:
            return "", ""
        return completion[open_ + len(THINK_OPEN) :].strip(), ""
    start = open_ + len(THINK_OPEN) if -1 < open_ < close else 0
    return completion[start:close].strip(), completion[close + len(THINK_CLOSE) :].strip()


def think_tags(completion: str) -> tuple[int, int, bool]:
    """(opening tags, closing tags, whether the first opening comes before the first closing)."""
    first_open, first_close = completion.find(THINK_OPEN), completion.find(THINK_CLOSE)
    return (
        completion.count(THINK_OPEN),
        completion.count(THINK_CLOSE),
        first_open != -1 and first_open < first_close,
    )


def join_completion(text: str, prefill: str = "", reasoning: str | None = None) -> str:
    """The stored completion: always starts with "<think>\\n" when the model thought.

    - prefilled: the prompt ended with the prefill, so the model's text continues it;
    - `reasoning` given (DeepSeek API `reasoning_content`, vLLM reasoning parsers): rebuild
      the think block around it;
    - otherwise the text as returned, with "<think>\\n" restored when a server-side template
      prefilled it (a closing tag without an opening one).
    """
    if reasoning is not None:
        return format_trace(reasoning.strip("\n"), text.lstrip())
    if prefill:
        return prefill + text
    if THINK_CLOSE in text and THINK_OPEN not in text.split(THINK_CLOSE, 1)[0]:
        return PREFILL + text.lstrip("\n")
    return text


def normalize_trace(content: str) -> str:
    """Any assistant reply in the R1 layout: reasoning kept when there is a think block (even
    one whose opening tag was prefilled away), an empty think block otherwise."""
    if THINK_CLOSE in content:
        reasoning, answer = split_trace(content if THINK_OPEN in content else PREFILL + content)
        return format_trace(reasoning, answer)
    return format_trace("", content.strip())


def training_target(reasoning: str, answer: str) -> str:
    """The assistant turn a student is trained on (surrounding whitespace trimmed)."""
    return format_trace(reasoning.strip(), answer.strip())
