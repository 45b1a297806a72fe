"""What watches a GRPO run: the guards that stop a run that cannot learn, the progress bar,
the metrics history."""

from __future__ import annotations

import logging
import time
from typing import Any

from distill.log import progress
from distill.rl.config import RLRecipe

log = logging.getLogger(__name__)


# --- callbacks: guards, progress, curves -----------------------------------------------------


def guard_message(kind: str, logs: dict[str, Any], rounds: int, recipe: RLRecipe, args: Any) -> str:
    """One line: which guard, what it saw, what to change."""
    if kind == "zero_variance":
        acc = logs.get("rewards/accuracy/mean")
        if acc is not None and acc <= 0.0:
            what = "no completion was correct"
            fix = ("start from a model that sometimes solves these problems (R1's cold start: "
                   "`distill train` first), use easier ones (--pass-rate-band 0.1,0.6), or check the "
                   f"template ({recipe.template}) matches the model")  # fmt: skip
        elif acc is not None and acc >= 1.0:
            what = "every completion was correct"
            fix = "use harder problems (--pass-rate-band 0.1,0.6)"
        else:
            what = f"reward {logs.get('reward', 0.0):.2f} in every group"
            fix = "raise --temperature or --num-generations, or give the rewards more resolution"
        return (f"guard: every group of {args.num_generations} completions got the same reward for "
                f"{rounds} steps ({what}): zero advantage, zero gradient. {fix}.")  # fmt: skip
    if kind == "truncated":
        ratio = logs.get("completions/clipped_ratio") or 0.0
        return (f"guard: {100 * ratio:.0f}% of completions hit --max-completion-length "
                f"{args.max_completion_length} for {rounds} steps: truncated answers earn nothing. "
                "Raise --max-completion-length, or start from a model that answers in fewer tokens.")  # fmt: skip
    rate = logs.get("accuracy/unparsed_rate") or 0.0
    return (f"guard: no answer could be extracted from {100 * rate:.0f}% of completions for {rounds} "
            f"steps: the template '{recipe.template}' and the model's output disagree. Check "
            "--template (r1: \\boxed answer after the reasoning; r1-zero: answer tags; plain: "
            "anywhere), the prefill, and samples with --log_completions.")  # fmt: skip


def make_callbacks(recipe: RLRecipe, show_progress: bool, max_seconds: float | None = None) -> tuple[Any, Any]:  # fmt: skip
    from transformers import TrainerCallback

    class Monitor(TrainerCallback):
        """Guards on each generation round's logs, the progress bar, the curves."""

        def __init__(self) -> None:
            self.history: list[dict[str, Any]] = []
            self.streaks = {"zero_variance": 0, "truncated": 0, "unparsed": 0}
            self.tripped: str | None = None
            self.started = 0.0
            self.out_of_time = False  # stopped by max_seconds
            self.bar = progress("reward {task.fields[reward]}", "pass {task.fields[pass_]}",
                                "trunc {task.fields[trunc]}", disable=not show_progress)  # fmt: skip
            self.task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.bar.start()
            self.task = self.bar.add_task("rl", total=state.max_steps, completed=state.global_step,
                                          reward="-", pass_="-", trunc="-")  # fmt: skip
            self.started = time.monotonic()  # max_seconds counts training, not the model's load

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.bar.update(self.task, completed=state.global_step)
            if max_seconds is not None and self._over(args, time.monotonic() - self.started >= max_seconds):
                log.info("max_seconds %s reached at step %d: stopping", max_seconds, state.global_step)
                self.out_of_time = True
                control.should_training_stop = True

        def _over(self, args: Any, over: bool) -> bool:
            # every rank must stop at the same step, or the others wait forever in a collective
            import torch
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
                return over
            flag = torch.tensor([float(over)], device=args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            return bool(flag.item())

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.bar.stop()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:  # fmt: skip
            if not logs:
                return
            self.history.append({"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, int | float) or v is None}})  # fmt: skip
            if "frac_reward_zero_std" not in logs:
                return  # a step that reused the last generation, or the closing summary
            fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            self.bar.update(self.task, reward=fmt(logs.get("reward")), pass_=fmt(logs.get("accuracy/pass_rate")),
                            trunc=fmt(logs.get("completions/clipped_ratio")))  # fmt: skip
            g = recipe.guards
            seen = {
                "zero_variance": (logs.get("frac_reward_zero_std") or 0.0) >= 1.0,
                "truncated": (logs.get("completions/clipped_ratio") or 0.0) > g.max_truncated,
                "unparsed": (logs.get("accuracy/unparsed_rate") or 0.0) > g.max_unparsed,
            }
            for kind, bad in seen.items():
                self.streaks[kind] = self.streaks[kind] + 1 if bad else 0
            if not g.enabled or self.tripped:
                return
            # the most specific cause first: truncation and parse failures also zero the variance
            for kind in ("truncated", "unparsed", "zero_variance"):
                if self.streaks[kind] >= g.steps:
                    self.tripped = guard_message(kind, logs, self.streaks[kind], recipe, args)
                    control.should_training_stop = True
                    return

    monitor = Monitor()
    return monitor, monitor.bar


