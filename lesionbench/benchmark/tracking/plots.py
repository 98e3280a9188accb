"""The figures the MLflow sink logs: each run's ROC and PR curves (and Kaplan-Meier plot for survival), and
each result's low-data curve.

A result has 20 runs by default, all scored on the same test split, so their ROC/PR figures share everything
but the curves and the title. :class:`RunPlots` therefore builds each figure once per result and redraws only
the curves and the title for each run; the axes have fixed limits and a fixed layout (no ``bbox_inches="tight"``,
which lays the figure out twice per save). Drawing a figure from scratch per run was most of the time of
``lesionbench demo``'s MLflow logging. A redrawn figure is the same picture as one drawn fresh for that run
(``tests/test_tracking.py`` compares the pixels).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from lesionbench.benchmark.scoring.protocols import protocol_dir, protocol_of
from lesionbench.benchmark.types import SubsetResult, TaskKind, TaskResult

logger = logging.getLogger(__name__)

#: Resolution of every logged figure (dots per inch).
DPI = 90
#: Both axes of ROC and PR figures: the unit square with matplotlib's default 5% margin, the same for every run
#: so that runs compare at a glance.
_UNIT_LIMITS = (-0.05, 1.05)


def _new_figure(figsize: tuple[float, float]) -> Any:
    """A figure on its own Agg canvas: no pyplot (no global figure registry, no backend switching)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _write_png(canvas: Any, path: Path) -> None:
    """The canvas's pixels as they are (no redraw) to a PNG; zlib level 3: about 40% faster to encode than the
    default 6 for these line plots, and 4% larger."""
    from matplotlib.image import imsave

    imsave(path, np.asarray(canvas.buffer_rgba()), format="png", dpi=DPI, pil_kwargs={"compress_level": 3})


def _curves(result: TaskResult, test: Any, y: Any, scores: Any) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, positives, scores) of each curve of a run's test predictions; one-vs-rest per class for multiclass."""
    kind = result.task.kind
    if kind == TaskKind.SURVIVAL:
        known = test["label_2y"].notna().to_numpy()
        return [("death within 2 years", test["label_2y"].to_numpy()[known] == 1, scores["score"][known])]
    if kind == TaskKind.BINARY:
        names = result.task.class_names
        return [(str(names[1]) if len(names) == 2 else "class 1", y == 1, scores)]
    names = result.task.class_names or tuple(str(k) for k in range(scores.shape[1]))
    return [(names[k] if k < len(names) else str(k), y == k, scores[:, k]) for k in range(scores.shape[1])]


class _CurveFigure:
    """One ROC or PR figure with a fixed set of curves, redrawn per run.

    What stays (axes, ticks, labels, the chance diagonal) is drawn once and kept as pixels; each run restores
    them and draws only its curves, the legend (over the curves, as in a full draw) and its title.
    """

    def __init__(self, which: str, labels: tuple[str, ...]) -> None:
        self.which = which
        self.fig = _new_figure((5.5, 5))
        # margins that fit the axis labels and the title at this size, as the tight layout did
        self.fig.subplots_adjust(left=0.13, right=0.97, bottom=0.10, top=0.94)
        ax = self.ax = self.fig.add_subplot()
        if which == "roc":
            ax.plot([0, 1], [0, 1], "k:", lw=0.8)
            ax.set(xlabel="false positive rate", ylabel="true positive rate")
        else:
            ax.set(xlabel="recall", ylabel="precision")
        ax.set(xlim=_UNIT_LIMITS, ylim=_UNIT_LIMITS)
        ax.title.set_fontsize(8)
        self.fig.canvas.draw()
        self.background = self.fig.canvas.copy_from_bbox(self.fig.bbox)
        # added after the background is kept: drawn per run, in this order, over it
        self.lines = [ax.plot([], [], lw=1.2, label=label)[0] for label in labels]
        self.legend = ax.legend(fontsize=7, loc="lower right" if which == "roc" else "lower left") if labels else None

    def save(self, curves: list[tuple[np.ndarray, np.ndarray]], title: str, path: Path, texts: list[str] | None = None) -> Path:
        """Draw ``curves`` with ``texts`` as their legend entries (the class and its AUC or AP) and write ``path``."""
        canvas, ax = self.fig.canvas, self.ax
        canvas.restore_region(self.background)
        for line, (xs, ys) in zip(self.lines, curves, strict=True):
            line.set_data(xs, ys)
            ax.draw_artist(line)
        if self.legend is not None:
            for entry, text in zip(self.legend.get_texts(), texts or [], strict=False):
                entry.set_text(text)
            ax.draw_artist(self.legend)
        ax.title.set_text(f"{'ROC' if self.which == 'roc' else 'PR'}  {title}")  # keeps its font size (set_title resets it)
        ax.draw_artist(ax.title)
        _write_png(canvas, path)
        return path


class _KMFigure:
    """The Kaplan-Meier figure's fixed part (axes from day 0 to the last test time, survival 0-1), kept as pixels."""

    def __init__(self, t_max: float) -> None:
        self.fig = _new_figure((6, 4.5))
        self.fig.subplots_adjust(left=0.11, right=0.97, bottom=0.12, top=0.93)
        ax = self.ax = self.fig.add_subplot()
        ax.set(xlabel="days", ylabel="survival", xlim=(-0.05 * t_max, 1.05 * t_max), ylim=_UNIT_LIMITS)
        ax.title.set_fontsize(8)
        self.fig.canvas.draw()
        self.background = self.fig.canvas.copy_from_bbox(self.fig.bbox)


class RunPlots:
    """The ROC, PR (and, for survival, Kaplan-Meier) figures of the runs of one result.

    ``save(run, rdir, out)`` writes ``roc.png``, ``pr.png`` (and ``km.png``) of ``run`` into ``out`` and returns
    their paths. Figures are kept between runs and redrawn (see the module docstring), and go with the object.
    """

    def __init__(self, result: TaskResult, labels: Any = None) -> None:
        self.result = result
        self.labels = labels  # the task's manifest: the ground truth the saved predictions do not hold
        self._figures: dict[tuple[str, tuple[str, ...]], _CurveFigure] = {}
        self._km: Any = None

    def save(self, run: SubsetResult, rdir: Path, out: Path) -> list[Path]:
        from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

        from lesionbench.benchmark.scoring.scorer import read_predictions

        kind = self.result.task.kind
        test, y, scores = read_predictions(rdir / run.predictions_path, kind, self.labels)
        # a class absent from the test split (or present in all of it) has no curve
        drawn = [(label, pos, s) for label, pos, s in _curves(self.result, test, y, scores) if pos.any() and not pos.all()]
        labels = tuple(label for label, _, _ in drawn)
        title = f"{self.result.task.name} / {self.result.encoder.name}  (fraction {run.fraction:g}, seed {run.seed})"
        paths = []
        for which in ("roc", "pr"):
            fig = self._figures.get((which, labels))
            if fig is None:
                fig = self._figures[(which, labels)] = _CurveFigure(which, labels)
            data, texts = [], []
            for label, pos, s in drawn:
                if which == "roc":
                    fpr, tpr, _ = roc_curve(pos, s)
                    data.append((fpr, tpr))
                    texts.append(f"{label}  AUC {roc_auc_score(pos, s):.3f}")
                else:
                    prec, rec, _ = precision_recall_curve(pos, s)
                    data.append((rec, prec))
                    texts.append(f"{label}  AP {average_precision_score(pos, s):.3f}")
            paths.append(fig.save(data, title, out / f"{which}.png", texts))
        if kind == TaskKind.SURVIVAL and "km_risk_threshold" in run.params:
            paths.append(self._save_km(run, test, scores, out / "km.png"))
        return paths

    def _save_km(self, run: SubsetResult, test: Any, scores: Any, path: Path) -> Path:
        """Kaplan-Meier curves of the test lesions above and below the training median risk (with 95% bands)."""
        from lifelines import KaplanMeierFitter
        if self._km is None:
            self._km = _KMFigure(float(test["time"].max()))
        fig, ax = self._km.fig, self._km.ax
        fig.canvas.restore_region(self._km.background)
        high = scores["risk"] > float(run.params["km_risk_threshold"])
        drawn = []
        for label, mask, colour in (("low risk", ~high, "C0"), ("high risk", high, "C1")):
            if mask.any():
                km = KaplanMeierFitter().fit(test["time"][mask], test["event"][mask])
                t = km.survival_function_.index.to_numpy()
                ci = km.confidence_interval_survival_function_.to_numpy()
                # as lifelines' plot_survival_function draws them: a post-step curve over its band
                drawn.append(ax.fill_between(t, ci[:, 0], ci[:, 1], step="post", alpha=0.25, color=colour, lw=0))
                drawn += ax.plot(t, km.survival_function_.to_numpy()[:, 0], drawstyle="steps-post", color=colour, label=f"{label} (n={int(mask.sum())})")
        drawn.append(ax.legend(loc="upper right"))
        ax.title.set_text(f"KM at training median risk, log-rank p (per patient)={float(run.params.get('logrank_p', float('nan'))):.3g}")
        for artist in [*drawn, ax.title]:
            ax.draw_artist(artist)
        canvas = fig.canvas
        _write_png(canvas, path)
        for artist in drawn:
            artist.remove()
        return path


def plot_run(result: TaskResult, run: SubsetResult, rdir: Path, out: Path, labels: Any = None) -> list[Path]:
    """ROC and PR curves (and a Kaplan-Meier plot for survival) of one run's test predictions (``labels``: the task's manifest)."""
    return RunPlots(result, labels).save(run, rdir, out)


def plot_low_data_curve(result: TaskResult, path: Path) -> Path:
    """Each metric against the training fraction: every seed as a dot, mean +- sd as a line and band."""
    metrics = list(result.runs[0].metrics) if result.runs else []
    fig = _new_figure((4.2 * max(1, len(metrics)), 3.6))
    axes = fig.subplots(1, max(1, len(metrics)), squeeze=False)
    shots = all(r.shots for r in result.runs)  # k-shot: against k, else against the % of training labels
    for ax, m in zip(axes[0], metrics, strict=False):
        fr = np.array([r.shots if shots else r.fraction * 100 for r in result.runs], dtype=float)
        vals = np.array([r.metrics[m].value for r in result.runs])
        ax.scatter(fr, vals, s=12, alpha=0.6, color="tab:blue")
        xs = sorted(set(fr))
        means = np.array([np.nanmean(vals[fr == f]) for f in xs])
        sds = np.array([np.nanstd(vals[fr == f], ddof=1) if (fr == f).sum() > 1 else 0.0 for f in xs])
        x = np.array(xs)
        ax.plot(x, means, "-o", color="tab:blue", ms=3)
        ax.fill_between(x, means - sds, means + sds, alpha=0.2, color="tab:blue")
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
        per = "per class" if result.extra.get("shots_per") == "class" else "in total"
        ax.set(xlabel=f"shots {per} (log scale)" if shots else "training labels (% of the train split, log scale)", ylabel=m, title=m)
    fig.suptitle(f"{result.task.name} / {result.encoder.name} / {protocol_dir(protocol_of(result), result.probe)}", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    # once per result (not per run): the tight layout's second pass is cheap here and fits any number of panels
    fig.savefig(path, bbox_inches="tight")
    return path
