"""`distill eval` to R1's protocol: LiveCodeBench end to end (a local fixture in its exact
Hub layout, read through the Hub cache), a served model, k per benchmark, bootstrap intervals."""

import json

import pytest
from aiohttp import web
from servers import Background
from test_code_formats import STDIN_SUM, hub_cache, lcb_rows

from distill.config import override
from distill.evaluate import EvalConfig, evaluate, samples_for
from distill.metrics import bootstrap_ci
from distill.teachers.profile import TeacherProfile


@pytest.fixture
def lcb_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    root = hub_cache(tmp_path / "hub", lcb_rows())
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    return root


def test_bootstrap_interval_brackets_the_mean_and_stays_in_range():
    rates = [1.0] * 3 + [0.0] * 27  # AIME-like: 3 of 30 solved
    lo, hi = bootstrap_ci(rates)
    assert 0.0 <= lo < 0.1 < hi <= 0.3
    assert bootstrap_ci(rates) == (lo, hi)  # seeded: the same report twice
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5)


def test_k_is_a_property_of_each_benchmark_and_samples_overrides_it():
    cfg = EvalConfig(benchmark=["aime24"], output="o")
    assert samples_for(cfg, "aime24") == 64 and samples_for(cfg, "math500") == 4
    assert samples_for(cfg, "my_file") == 16
    assert samples_for(EvalConfig(benchmark=["aime24"], output="o", samples=8), "aime24") == 8


def coder_server() -> Background:
    """A served 'model' that always answers with one stdin program (sum of the input)."""

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        message = {
            "role": "assistant",
            "content": f"<think>\nsum them\n</think>\n\n```python\n{STDIN_SUM}```",
        }
        return web.json_response({
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": i, "message": message, "finish_reason": "stop"} for i in range(body.get("n", 1))],
            "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70},
        })  # fmt: skip

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return Background(app)


def m_prompt(report: dict) -> str:
    return report["benchmarks"]["livecodebench"]["prompts"]["code"]["user"]


def test_livecodebench_on_a_served_model_end_to_end(lcb_cache, tmp_path):
    server = coder_server()
    try:
        profile = override(TeacherProfile(model="coder", name="eval"),
                           {"backend": "openai", "server.base_url": server.url})  # fmt: skip
        report = evaluate(
            EvalConfig(
                benchmark=["livecodebench"], output=tmp_path / "r", samples=2, progress=False
            ),
            profile,
        )
        # another window than R1's, from eval's own flags
        other = evaluate(EvalConfig(benchmark=["livecodebench"], output=tmp_path / "r2", samples=1,
                                    date_from="2023-01-01", date_to="2023-12-31", progress=False),
                         profile)  # fmt: skip
    finally:
        server.close()
    assert other["benchmarks"]["livecodebench"]["problems"] == 1
    # results.json says which prompt the model was given
    assert "Read the inputs from stdin" not in m_prompt(report)  # the question carries LCB's
    assert report["benchmarks"]["livecodebench"]["prompts"]["code"]["prefill"] == "<think>\n"
    m = report["benchmarks"]["livecodebench"]
    # the stdin problem is solved by the program, the functional (LeetCode) one is not
    assert m["problems"] == 2 and m["samples"] == 2 and m["pass@1"] == 0.5 and m["failed"] == 0
    assert len(m["pass@1_ci95"]) == 2
    text = (tmp_path / "r" / "results.md").read_text()
    assert "95% CI" in text and "| livecodebench | 2 | 2 | 50.0 |" in text
    assert (tmp_path / "r" / "pass_at_1.png").stat().st_size > 1000
    samples = {
        r["problem_id"]: r for r in _rows(tmp_path / "r" / "samples" / "livecodebench.parquet")
    }
    assert samples["abc001_a"]["correct"] is True and samples["two-sum"]["reason"] == "wrong_answer"


def test_livecodebench_with_the_tiny_model_in_vllm(lcb_cache, vllm_teacher, tiny_profile, tmp_path):
    report = evaluate(EvalConfig(benchmark=["livecodebench"], output=tmp_path / "r", samples=1, progress=False),
                      tiny_profile, vllm_teacher)  # fmt: skip
    m = report["benchmarks"]["livecodebench"]
    assert m["problems"] == 2 and m["failed"] == 0  # a random tiny model solves nothing: it ran
    prompts = [
        json.loads(r)[0]["content"]
        for r in _column(tmp_path / "r" / "generations" / "livecodebench", "messages")
    ]
    assert all(p.startswith("You are an expert Python programmer") for p in prompts)
    assert any("You will use the following starter code" in p for p in prompts)


def _rows(path):
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _column(folder, name):
    from distill.records import read_corpus

    return read_corpus(folder, columns=[name]).column(name).to_pylist()


def test_gpqa_prompt_is_simple_evals_and_its_answer_line_is_read_back():
    from distill.prompts import default_prompt
    from distill.verify.choice import check_choice

    user = default_prompt("choice").user
    assert user.startswith("Answer the following multiple choice question.")
    assert "'Answer: $LETTER' (without quotes)" in user and user.endswith("{problem}")
    reply = "The options... B is wrong, so\nAnswer: C"
    assert check_choice(json.dumps("C"), reply).ok is True
