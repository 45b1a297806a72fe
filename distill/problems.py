"""Problems from any dataset: Hub ids, local jsonl/json/parquet/csv files or folders.

Columns are auto-detected from the usual names (problem/question/prompt, answer/solution,
id/unique_id/task_id) and can be named explicitly. Every problem gets a domain and a
`reference` (JSON): the gold answer (math), the correct letter (choice), tests (code).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distill.code_formats import code_reference, starter_code
from distill.config import ASSETS, option
from distill.errors import UserError
from distill.prompts import code_problem

log = logging.getLogger(__name__)

Domain = Literal["math", "code", "choice", "text"]
PROBLEM_COLUMNS = ["problem", "question", "question_content", "prompt", "input", "query",
                   "instruction", "Question"]  # fmt: skip
ANSWER_COLUMNS = [
    "answer", "final_answer", "expected_answer", "gold", "target", "reference", "label",
    "solution", "Correct Answer",
]  # fmt: skip
ID_COLUMNS = ["id", "problem_id", "unique_id", "task_id", "question_id", "uid", "idx", "qid", "ID"]
CHOICE_COLUMNS = ["choices", "options"]
CODE_TEST_COLUMNS = ["test", "tests", "input_output", "test_cases", "public_test_cases",
                     "verification_info"]  # fmt: skip
EXTENSIONS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
LETTERS = "ABCDEFGHIJ"


@dataclass
class DatasetSpec:
    """Where problems come from and how its columns map to the trace record."""

    dataset: str = option(help="Hub dataset id, a local jsonl/json/parquet/csv file or folder, "
                          "or a built-in name (math500, aime24, aime25, amc23, gsm8k, "
                          "gpqa-diamond, humaneval, livecodebench, arith-demo).")  # fmt: skip
    split: str | None = option(None, help="Dataset split (default: the only one, else 'test').")
    subset: str | None = option(None, help="Dataset configuration name on the Hub.")
    problem_column: str | None = option(None, help="Column with the problem (auto-detected).")
    answer_column: str | None = option(None, help="Column with the gold answer (auto-detected).")
    id_column: str | None = option(None, help="Column with a unique problem id (else a hash).")
    domain: Domain | None = option(None, help="math, code, choice or text (auto-detected).")
    limit: int | None = option(None, help="Use only the first N problems.")
    release: str | None = option(
        None,
        help="LiveCodeBench release: release_v1..release_v6 (cumulative) or v1..v6 (one file).",
    )
    date_from: str | None = option(
        None, help="Keep problems dated on or after this ISO date (a contest_date/date column)."
    )
    date_to: str | None = option(
        None, help="Keep problems dated on or before this ISO date (a contest_date/date column)."
    )
    choice_columns: list[str] = option(
        default_factory=list,
        help="Columns holding the correct option then the wrong ones (GPQA style); the options "
        "are shuffled deterministically per problem.",
        cli=False,
    )

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be >= 1")


BUILTIN: dict[str, dict[str, Any]] = {
    "arith-demo": {"dataset": str(ASSETS / "arith-demo.jsonl"), "domain": "math"},
    "math500": {"dataset": "HuggingFaceH4/MATH-500", "split": "test", "id_column": "unique_id",
                "answer_column": "answer", "domain": "math"},
    "aime24": {"dataset": "HuggingFaceH4/aime_2024", "split": "train", "domain": "math",
               "answer_column": "answer"},
    "aime25": {"dataset": "yentinglin/aime_2025", "split": "train", "domain": "math",
               "answer_column": "answer"},
    "amc23": {"dataset": "math-ai/amc23", "split": "test", "domain": "math",
              "answer_column": "answer"},
    "gsm8k": {"dataset": "openai/gsm8k", "subset": "main", "split": "test", "domain": "math",
              "problem_column": "question", "answer_column": "answer"},
    "gpqa-diamond": {"dataset": "Idavidrein/gpqa", "subset": "gpqa_diamond", "split": "train",
                     "domain": "choice", "problem_column": "Question",
                     "choice_columns": ["Correct Answer", "Incorrect Answer 1",
                                        "Incorrect Answer 2", "Incorrect Answer 3"]},
    "humaneval": {"dataset": "openai/openai_humaneval", "split": "test", "domain": "code",
                  "id_column": "task_id", "problem_column": "prompt"},
    # R1's window (paper, table 4: "LiveCodeBench (2024-08 - 2025-01)")
    "livecodebench": {"dataset": "livecodebench/code_generation_lite", "domain": "code",
                      "release": "release_v6", "date_from": "2024-08-01", "date_to": "2025-01-31"},
}  # fmt: skip
LCB_REPO = "livecodebench/code_generation_lite"
DATE_COLUMNS = ["contest_date", "date"]


def lcb_files(release: str) -> list[str]:
    """The JSONL files of a LiveCodeBench release on the Hub (its loading script's table):
    release_vN is test.jsonl .. testN.jsonl, vN the one file added in that release."""
    names = ["test.jsonl"] + [f"test{n}.jsonl" for n in range(2, 7)]
    kind, _, number = release.rpartition("v")
    if kind not in ("release_", "") or not number.isdigit() or not 1 <= int(number) <= 6:
        raise UserError(f"--release {release}: expected release_v1..release_v6 or v1..v6")
    n = int(number)
    return names[:n] if kind else [names[n - 1]]


def _fetch_lcb(spec: DatasetSpec) -> list[Path]:
    """The release's files from the Hub cache (downloaded once): LiveCodeBench's Hub repo is a
    loading script, which `datasets` no longer runs, beside plain JSONL files."""
    from huggingface_hub import hf_hub_download

    try:
        return [
            Path(hf_hub_download(LCB_REPO, name, repo_type="dataset"))
            for name in lcb_files(spec.release or "release_v6")
        ]
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{LCB_REPO}: cannot download ({_first_line(e)})") from None


@dataclass
class Problem:
    problem_id: str
    problem: str
    domain: str
    reference: str | None  # JSON
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_builtin(spec: DatasetSpec) -> DatasetSpec:
    """Fill a built-in dataset name's Hub id and columns; explicit flags still win."""
    preset = BUILTIN.get(spec.dataset)
    if preset is None or Path(spec.dataset).exists():
        return spec
    values = dict(preset)
    for key, value in vars(spec).items():
        if key != "dataset" and value not in (None, []):
            values[key] = value
    return DatasetSpec(**values)


def stable_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def open_dataset(spec: DatasetSpec, default_split: str = "test") -> tuple[Any, str]:
    """A `datasets.Dataset` for the spec and a fingerprint of its content.

    A dataset with several splits (a Hub id, or a local folder in the Hub's layout,
    `data/train-*.parquet` + `data/test-*.parquet`) gives `spec.split`, else `default_split`
    ("test" for generate and eval, "train" for training), else its only split."""
    import datasets

    # datasets logs a bad file's error before raising; the UserError below says it once
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    datasets.disable_progress_bars()
    path = Path(spec.dataset).expanduser()
    # a Hub id is `name` or `owner/name`: `a/b/c`, or `data/x` where data/ is a local folder,
    # can only be a local path
    looks_local = (
        path.exists() or spec.dataset.startswith((".", "/", "~")) or path.suffix in EXTENSIONS
        or len(path.parts) > 2 or (len(path.parts) == 2 and Path(path.parts[0]).is_dir())
    )  # fmt: skip
    if spec.dataset == LCB_REPO:
        files = _fetch_lcb(spec)
        ds = datasets.load_dataset("json", data_files=[str(f) for f in files], split="train")
        return ds, ds._fingerprint
    if looks_local:
        if not path.exists():
            raise UserError(f"{spec.dataset}: no such file or folder")
        if has_splits(path):
            # split-named files: read them as the Hub would, never one mixed "train" split
            try:
                loaded = datasets.load_dataset(str(path), spec.subset)
            except Exception as e:
                raise UserError(f"{spec.dataset}: cannot read ({_first_line(e)})") from None
            return _pick_split(loaded, spec, default_split)
        files = (
            [path]
            if path.is_file()
            else sorted(
                p for p in path.rglob("*") if p.suffix in EXTENSIONS and not p.name.startswith(".")
            )
        )
        builders = {EXTENSIONS.get(p.suffix) for p in files}
        if not files or None in builders:
            raise UserError(f"{spec.dataset}: expected .jsonl/.json/.parquet/.csv data files")
        if len(builders) > 1:
            raise UserError(f"{spec.dataset}: mixes file types {sorted(builders)}; use one")
        if all(p.stat().st_size < 64 and not p.read_bytes().strip() for p in files):
            raise UserError(f"{spec.dataset}: the dataset is empty")
        try:
            ds = datasets.load_dataset(
                builders.pop(), data_files=[str(p) for p in files], split="train"
            )
        except Exception as e:  # datasets raises many types for malformed files
            where = _bad_json_line(files) or _first_line(_root_cause(e))
            raise UserError(f"{spec.dataset}: cannot read ({where})") from None
        return ds, ds._fingerprint
    try:
        loaded = datasets.load_dataset(spec.dataset, spec.subset, split=spec.split)
    except ValueError as e:
        raise UserError(f"{spec.dataset}: {_first_line(e)}") from None
    except Exception as e:
        raise UserError(
            f"{spec.dataset}: no such local file or folder, and not loadable from the Hub "
            f"({_first_line(_root_cause(e))})"
        ) from None
    return _pick_split(loaded, spec, default_split)


def has_splits(path: Path) -> bool:
    """A local folder in the Hub's layout: files named by split (`data/test-00000-of-00001.parquet`)."""
    from datasets.data_files import get_data_patterns

    if not path.is_dir():
        return False
    try:
        patterns = get_data_patterns(str(path))
    except Exception:  # no data files at all: not a split layout, the caller says what is missing
        return False
    # files named by no split come back as one "train" split matching everything ("**"); a
    # layout of one named split (only data/train-*.parquet) is still a split layout
    return any(glob != "**" for globs in patterns.values() for glob in globs)


def _pick_split(loaded: Any, spec: DatasetSpec, default_split: str) -> tuple[Any, str]:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if spec.split:
            if spec.split not in names:
                raise UserError(f"{spec.dataset}: no split '{spec.split}' (has {', '.join(names)})")
            split = spec.split
        elif default_split in names:
            split = default_split
        elif len(names) == 1 and default_split != "train":
            split = names[0]
        else:
            raise UserError(
                f"{spec.dataset}: no '{default_split}' split (has {', '.join(names)}); pick one with --split"
            )
        loaded = loaded[split]
    return loaded, loaded._fingerprint


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _root_cause(e: BaseException) -> BaseException:
    """The error under datasets' wrappers (DatasetGenerationError says nothing of the row)."""
    while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
        e = e.__cause__ or e.__context__
    return e


def _bad_json_line(files: list[Path]) -> str | None:
    """'FILE line N: why' for the first line of a JSONL file that is not JSON, if any."""
    for f in files:
        if f.suffix != ".jsonl":
            continue
        with open(f, encoding="utf-8", errors="replace") as lines:
            for n, line in enumerate(lines, 1):
                if line.strip():
                    try:
                        json.loads(line)
                    except json.JSONDecodeError as e:
                        return f"{f.name} line {n}: invalid JSON, {e.msg} at column {e.colno}"
    return None


def _pick(
    columns: list[str], explicit: str | None, candidates: list[str], what: str, source: str
) -> str | None:
    if explicit:
        if explicit not in columns:
            raise UserError(
                f"{source}: no column '{explicit}' for the {what} (columns: {', '.join(columns)})"
            )
        return explicit
    return next((c for c in candidates if c in columns), None)


def _detect_domain(columns: list[str], spec: DatasetSpec, answer_col: str | None) -> str:
    if spec.domain:
        return spec.domain
    if spec.choice_columns or any(c in columns for c in CHOICE_COLUMNS):
        return "choice"
    if any(c in columns for c in CODE_TEST_COLUMNS) or {"inputs", "outputs"} <= set(columns):
        return "code"
    return "math" if answer_col else "text"


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (brace-balanced), for solution-only math datasets."""
    start = text.rfind("\\boxed")
    if start == -1:
        return None
    i = text.find("{", start)
    if i == -1:
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None


def math_reference(value: Any, column: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if "####" in text:  # GSM8K: worked solution, then "#### 42"
        return text.rsplit("####", 1)[1].strip()
    if column == "solution" or (len(text) > 200 and "\\boxed" in text):
        return last_boxed(text)
    return text


def choice_problem(problem: str, options: list[str], correct: int) -> tuple[str, str]:
    lines = [f"{LETTERS[i]}) {str(o).strip()}" for i, o in enumerate(options)]
    return problem.rstrip() + "\n\n" + "\n".join(lines), LETTERS[correct]


def _choice(
    row: dict[str, Any], problem: str, spec: DatasetSpec, answer_col: str | None, pid: str
) -> tuple[str, str | None]:
    if spec.choice_columns:
        options = [row[c] for c in spec.choice_columns]
        order = list(range(len(options)))
        random.Random(pid).shuffle(order)  # deterministic per problem, not always "A"
        return choice_problem(problem, [options[i] for i in order], order.index(0))
    options_col = next((c for c in CHOICE_COLUMNS if c in row), None)
    answer = row.get(answer_col) if answer_col else None
    if options_col is None:  # options already inside the problem text
        return problem, str(answer).strip().strip("()").upper() if answer is not None else None
    options = list(row[options_col])
    if isinstance(answer, int) and not isinstance(answer, bool):
        correct = answer
    elif isinstance(answer, str) and answer.strip().strip("()").upper() in LETTERS[: len(options)]:
        correct = LETTERS.index(answer.strip().strip("()").upper())
    elif answer in options:
        correct = options.index(answer)
    else:
        return choice_problem(problem, options, 0)[0], None
    return choice_problem(problem, options, correct)


def load_problems(spec: DatasetSpec) -> tuple[list[Problem], dict[str, Any]]:
    """Problems + a description of the source (for manifests). Bad input -> UserError."""
    spec = resolve_builtin(spec)
    ds, fingerprint = open_dataset(spec)
    source = spec.dataset
    columns = list(ds.column_names)
    problem_col = _pick(columns, spec.problem_column, PROBLEM_COLUMNS, "problem", source)
    if problem_col is None:
        raise UserError(
            f"{source}: no problem column found (columns: {', '.join(columns)}); "
            "name it with --problem-column"
        )
    answer_col = _pick(columns, spec.answer_column, ANSWER_COLUMNS, "answer", source)
    id_col = _pick(columns, spec.id_column, ID_COLUMNS, "id", source)
    for c in spec.choice_columns:
        if c not in columns:
            raise UserError(f"{source}: no column '{c}' (columns: {', '.join(columns)})")
    domain = _detect_domain(columns, spec, answer_col)
    if len(ds) == 0:
        raise UserError(
            f"{source}: the dataset is empty" + (f" (split '{spec.split}')" if spec.split else "")
        )
    if spec.date_from or spec.date_to:
        ds = _in_window(ds, spec, columns, source)
    if spec.limit:
        ds = ds.select(range(min(spec.limit, len(ds))))
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    dropped = 0
    for i, row in enumerate(ds):
        text = row.get(problem_col)
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{source}: row {i}: empty or non-text '{problem_col}'")
        pid = str(row[id_col]) if id_col else stable_id(text)
        if pid in seen:
            if id_col:
                raise UserError(
                    f"{source}: row {i}: duplicate id {pid!r} in '{id_col}' (first at row {seen[pid]})"
                )
            dropped += 1  # the same problem text twice: one problem
            continue
        seen[pid] = i
        if domain == "math":
            ref: Any = math_reference(row.get(answer_col), answer_col) if answer_col else None
        elif domain == "code":
            ref = code_reference(row, f"{source}: row {i}")
            question = "Complete the Python function below." if row.get("entry_point") else text
            text = code_problem(question, starter_code(row), (ref or {}).get("fn_name"))
        elif domain == "choice":
            text, ref = _choice(row, text, spec, answer_col, pid)
        else:
            ref = row.get(answer_col) if answer_col else None
        problems.append(
            Problem(pid, text, domain, None if ref is None else json.dumps(ref, ensure_ascii=False))
        )
    if dropped:
        log.info("%s: %d duplicate problem texts counted once", source, dropped)
    info = {
        "dataset": spec.dataset,
        "subset": spec.subset,
        "split": spec.split,
        "fingerprint": fingerprint,
        "columns": {"problem": problem_col, "answer": answer_col, "id": id_col},
        "domain": domain,
        "limit": spec.limit,
        "problems": len(problems),
    }
    return problems, info


def _in_window(ds: Any, spec: DatasetSpec, columns: list[str], source: str) -> Any:
    """Rows whose date (ISO text, compared by its first 10 characters) is in the window."""
    column = next((c for c in DATE_COLUMNS if c in columns), None)
    if column is None:
        raise UserError(
            f"{source}: --date-from/--date-to need a {' or '.join(DATE_COLUMNS)} column"
        )
    low, high = spec.date_from or "0000-00-00", spec.date_to or "9999-99-99"
    for bound in (spec.date_from, spec.date_to):
        if bound and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", bound):
            raise UserError(f"date {bound!r}: expected YYYY-MM-DD")
    kept = ds.filter(lambda d: low <= str(d)[:10] <= high, input_columns=column)
    if len(kept) == 0:
        raise UserError(f"{source}: no problem dated {low} to {high} (column '{column}')")
    return kept


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' -> (I, N), 0 <= I < N."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise UserError(f"--shard: expected I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def in_shard(problem_id: str, shard: tuple[int, int] | None) -> bool:
    """Hash-based so the split does not depend on dataset order and covers each problem once."""
    if shard is None:
        return True
    index, count = shard
    return int(hashlib.sha256(problem_id.encode()).hexdigest(), 16) % count == index
