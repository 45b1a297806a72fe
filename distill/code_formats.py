"""The code-test shapes real datasets use, read into the one reference shape distill runs.

The reference shape (docs/corpus.md), checked by `verify/code_tests.py`:

- `{"inputs": [stdin, ...], "outputs": [stdout, ...]}`: programs read stdin, print stdout;
- the same with `"fn_name"`: call-based, `inputs[i]` the argument list, `outputs[i]` the value
  (APPS/TACO wrap it in a one-element list; the check accepts both, as SkyThought does);
- `{"functional": program}`: a LeetCode-style test program run after the solution;
- `{"test": ..., "entry_point": ...}`: HumanEval's `check(candidate)`.

Sources read here: HumanEval (`test`, `entry_point`), LiveCodeBench (`public_test_cases`,
`private_test_cases`, `metadata.func_name`), open-r1 (`verification_info.test_cases`),
APPS/TACO (`input_output`), LeetCode (`functional`, `test`), and plain `inputs`/`outputs`.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import zlib
from typing import Any

from distill.errors import UserError

LCB_COLUMNS = {"question_content", "public_test_cases"}


class _PlainUnpickler(pickle.Unpickler):
    """LiveCodeBench pickles a JSON string; anything that names a class or function (the way
    a pickle runs code) is refused, so a hostile dataset cannot execute anything here."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id: only plain data")


def lcb_tests(value: Any, where: str) -> list[dict[str, Any]]:
    """LiveCodeBench test cases: a JSON list, or (private tests) base64 of zlib of a pickled
    JSON string."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str) or not value.strip():
        return []
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        raw = zlib.decompress(base64.b64decode(value, validate=False))
        payload = _PlainUnpickler(io.BytesIO(raw)).load()
    except (ValueError, zlib.error, pickle.UnpicklingError, EOFError) as e:
        raise UserError(
            f"{where}: private_test_cases is not LiveCodeBench's encoding ({e})"
        ) from None
    if not isinstance(payload, str):
        raise UserError(
            f"{where}: private_test_cases holds a {type(payload).__name__}, not a JSON string"
        )
    try:
        tests = json.loads(payload)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: private_test_cases is not JSON ({e.msg})") from None
    if not isinstance(tests, list):
        raise UserError(f"{where}: private_test_cases is not a list of tests")
    return tests


def _lcb_reference(row: dict[str, Any], where: str) -> dict[str, Any] | None:
    tests = lcb_tests(row.get("public_test_cases"), where) + lcb_tests(
        row.get("private_test_cases"), where
    )
    if not tests:
        return None
    if all(t.get("testtype") == "functional" for t in tests):
        meta = row.get("metadata") or {}
        meta = json.loads(meta) if isinstance(meta, str) and meta.strip() else meta or {}
        if not meta.get("func_name"):
            raise UserError(f"{where}: functional tests but no metadata.func_name")
        # one argument per line, each a JSON value; the output one JSON value
        return {
            "fn_name": meta["func_name"],
            "inputs": [[json.loads(a) for a in t["input"].split("\n")] for t in tests],
            "outputs": [json.loads(t["output"]) for t in tests],
        }
    return {"inputs": [t["input"] for t in tests], "outputs": [t["output"] for t in tests]}


def _open_r1_reference(info: Any) -> dict[str, Any] | None:
    if isinstance(info, str):
        info = json.loads(info)
    if not isinstance(info, dict) or info.get("language", "python") != "python":
        return None
    cases = info.get("test_cases") or []
    if not cases:
        return None
    return {"inputs": [c["input"] for c in cases], "outputs": [c["output"] for c in cases]}


def code_reference(row: dict[str, Any], where: str = "row") -> dict[str, Any] | None:
    """The reference tests of a dataset row, in distill's one shape (None if it has none)."""
    if row.get("test") and row.get("entry_point"):
        return {"test": row["test"], "entry_point": row["entry_point"]}
    if set(row) >= LCB_COLUMNS:
        return _lcb_reference(row, where)
    if row.get("verification_info"):
        return _open_r1_reference(row["verification_info"])
    for key in ("input_output", "tests", "test_cases", "test"):
        value = row.get(key)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                return {"functional": value} if key == "test" else None
        if isinstance(value, dict) and (
            {"inputs", "outputs"} <= set(value) or "functional" in value or "test" in value
        ):
            return value
    if "inputs" in row and "outputs" in row:
        return {"inputs": row["inputs"], "outputs": row["outputs"]}
    return None


def starter_code(row: dict[str, Any]) -> str:
    """The code a solution must complete: LiveCodeBench/TACO `starter_code`, HumanEval's
    function stub."""
    if row.get("test") and row.get("entry_point") and isinstance(row.get("prompt"), str):
        return row["prompt"]
    value = row.get("starter_code")
    return value if isinstance(value, str) else ""
