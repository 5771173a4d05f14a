"""What a run leaves behind: metrics.jsonl (the record), TensorBoard events, and curve.png."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional


def is_local(path: str) -> bool:
    return "://" not in path


class RunLog:
    """metrics.jsonl + TensorBoard events (process 0 only)."""

    def __init__(self, workdir: str, enabled: bool):
        self.enabled = enabled and is_local(workdir)
        self.path = Path(workdir) / "metrics.jsonl"
        self.tb = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                from tensorboardX import SummaryWriter
                self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"))
            except ImportError:  # TensorBoard is a convenience; the JSONL is the record
                self.tb = None

    def write(self, step: int, kind: str, values: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(workdir: str | Path) -> list[dict]:
    """metrics.jsonl rows; a step logged twice (work redone after a restart) keeps its last row."""
    path = Path(workdir) / "metrics.jsonl"
    rows: dict[tuple, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            rows[(r["kind"], r["step"])] = r
    return sorted(rows.values(), key=lambda r: (r["kind"], r["step"]))


def plot_curve(workdir: str | Path) -> Optional[Path]:
    """curve.png: one panel per logged stage that has rows: the pre-training stages (stage 1's loss; the
    locator's loss and window recall), the main stage's loss, and the evaluations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(workdir)
    pre = [r for r in rows if r["kind"] == "pretrain"]
    panels = []   # (title, ylabel, {label: [(step, value)]})
    stage1 = [(r["step"], r["loss"]) for r in pre if "loss" in r]
    if stage1:
        panels.append(("pre-training, stage 1", "loss", {"loss": stage1}))
    loc = [r for r in pre if "locator_loss" in r]
    if loc:
        panels.append(("pre-training, locator", "", {k: [(r["step"], r[f"locator_{k}"]) for r in loc]
                                                      for k in ("loss", "window_recall", "top1_in_answer")}))
    train = [r for r in rows if r["kind"] == "train"]
    if train:
        panels.append(("training curve", "train loss (the whole objective)", {"loss": [(r["step"], r["loss"]) for r in train]}))
    evals = [r for r in rows if r["kind"] == "eval"]
    if evals:
        # scores, not timings; per-set scores ("mc_acc/arc_easy") stay in metrics.jsonl, off the curve
        keys = [k for k in evals[-1] if k not in ("step", "kind", "n", "seconds") and "/" not in k]
        panels.append(("evaluation", "", {k: [(r["step"], r.get(k, float("nan"))) for r in evals] for k in keys}))
    if not panels:
        return None
    fig, ax = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for a, (title, ylabel, series) in zip(ax[0], panels):
        for label, pts in series.items():
            a.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if title == "evaluation" else None, label=label)
        a.set(xlabel="step", ylabel=ylabel, title=title)
        if len(series) > 1:
            a.legend()
    fig.tight_layout()
    out = Path(workdir) / "curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
