"""R1 prompts and `<think>` parsing.

R1 usage: no system prompt, every instruction in the user turn, and the response forced to
begin with "<think>\\n" (prefilled). A completion is stored whole, starting with "<think>\\n";
`reasoning` is the text inside the think block and `answer` the text after `</think>`.
"""

from __future__ import annotations

from typing import Any

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


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
    if prefill and not text.endswith(prefill):
        stripped = prefill.rstrip("\n")
        text = text + prefill[len(stripped) :] if text.endswith(stripped) else text + prefill
    return text


def join_completion(text: str, prefill: str = "", reasoning: str | None = None) -> str:
    """The stored completion: always starts with "<think>\\n" when the model thought.

    - prefilled: the prompt ended with the prefill, so the model's text continues it;
    - `reasoning` given (DeepSeek API `reasoning_content`, vLLM reasoning parsers): rebuild
      the think block around it;
    - otherwise the text as returned, with "<think>\\n" restored when a server-side template
      prefilled it (a closing tag without an opening one).
    """
    if reasoning is not None:
        return f"{THINK_OPEN}\n{reasoning.strip(chr(10))}\n{THINK_CLOSE}\n\n{text.lstrip()}"
    if prefill:
        return prefill + text
    if THINK_CLOSE in text and THINK_OPEN not in text.split(THINK_CLOSE, 1)[0]:
        return f"{THINK_OPEN}\n{text.lstrip(chr(10))}"
    return text


def split_completion(completion: str) -> tuple[str, str]:
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
