"""The README's two set-up commands are what CI runs and what the CLI accepts."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_two_setup_commands_and_ci_runs_the_test_one():
    demo, tests = setup_commands()
    assert demo.startswith('pip install -e ".[cpu]"') and "distill " in demo
    assert tests.endswith("&& pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), ".ci/run must run the README's test command verbatim"
