"""Comparing methods over seeds: means and sds, paired differences with their 95 % confidence intervals, and
the sentences the notebooks write from them (a win only where the interval excludes 0).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

TIE = 0.005  # differences of means smaller than this are reported as ties


# ----------------------------------------------------------------------------------------------- reporting
def summarize(table: pd.DataFrame, group: str = "scenario") -> pd.DataFrame:
    """Mean, sd and number of seeds of every (group, method, metric) in a long metrics table.

    Parameters
    ----------
    table
        Long table with columns ``group``, ``method``, ``metric`` and ``value`` (one row per seed).
    group
        Column that groups the rows, e.g. scenario or data set (default ``"scenario"``).

    Returns
    -------
    DataFrame
        Columns ``group``, ``method``, ``metric``, ``mean``, ``sd`` (0 for a single value) and ``n``, in the table's
        order.
    """
    return (table.groupby([group, "method", "metric"], sort=False)["value"]
            .agg(mean="mean", sd="std", n="count").reset_index().fillna({"sd": 0.0}))


def paired_differences(table: pd.DataFrame, metric: str, *, group: str = "scenario", ours: str = "cisformer",
                       peers=None, level: float = 0.95) -> pd.DataFrame:
    """``ours`` minus each peer on ``metric``, paired by seed, with a t confidence interval of the mean difference.

    Every method is scored on one fixed evaluation (the same held-out cells, clustering seeds and probe folds), so
    the seeds that differ are the models'. A peer run with the same seeds as ``ours`` is paired seed by seed; a
    peer with one run (deterministic methods) is compared with each of ``ours``' seeds. ``win`` is True only where
    the whole interval lies above 0 and ``loss`` only where it lies below; with one paired seed there is no
    interval (NaN) and neither is called.

    Parameters
    ----------
    table
        Long table with columns ``group``, ``method``, ``seed``, ``metric`` and ``value``.
    metric
        Metric compared (a value of the ``metric`` column).
    group
        Column that groups the comparisons (default ``"scenario"``); groups without ``ours`` are skipped.
    ours
        The method compared with the others (default ``"cisformer"``).
    peers
        Methods to compare with (default: every other method of each group, in table order).
    level
        Confidence level of the interval (default 0.95).

    Returns
    -------
    DataFrame
        One row per (group, peer): ``group``, ``peer``, ``n`` (pairs), ``ours``, ``peer_mean``, ``difference``,
        ``ci_low``, ``ci_high``, ``win``, ``loss``.
    """
    part = table[table["metric"] == metric]
    rows = []
    for name, sub in part.groupby(group, sort=False):
        values = sub.groupby(["method", "seed"])["value"].mean()
        if ours not in values.index.get_level_values(0):
            continue
        mine = values[ours]
        for peer in peers if peers is not None else dict.fromkeys(sub["method"]):
            if peer == ours or peer not in values.index.get_level_values(0):
                continue
            theirs = values[peer]
            if len(theirs) == 1:
                diff = mine.to_numpy() - theirs.iloc[0]
            else:
                common = mine.index.intersection(theirs.index)
                diff = mine[common].to_numpy() - theirs[common].to_numpy()
            n = len(diff)
            mean = float(diff.mean()) if n else np.nan
            half = (stats.t.ppf(0.5 + level / 2, n - 1) * diff.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
            rows.append({group: name, "peer": peer, "n": n, "ours": float(mine.mean()),
                         "peer_mean": float(theirs.mean()), "difference": mean, "ci_low": mean - half,
                         "ci_high": mean + half, "win": bool(n > 1 and mean - half > 0),
                         "loss": bool(n > 1 and mean + half < 0)})
    return pd.DataFrame(rows)


def describe_paired(diffs: pd.DataFrame, metric: str, *, group: str = "scenario", ours: str = "cisformer") -> str:
    """One sentence per group from :func:`paired_differences`: the peers ``ours`` beats (95 % CI of the paired
    difference above 0), those it loses to (below 0) and those it cannot be told apart from.

    Parameters
    ----------
    diffs
        Output of :func:`paired_differences`.
    metric
        Name of the metric, as written in the sentences.
    group, ours
        The group column and the compared method, as given to :func:`paired_differences`.

    Returns
    -------
    str
        One line per group, each starting with ``"- "``.
    """
    lines = []
    for name, part in diffs.groupby(group, sort=False):
        def listed(rows):
            return ", ".join(f"{r.peer} ({r.difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}])"
                             for r in rows.itertuples()) or "none"
        undecided = part[~part["win"] & ~part["loss"]]
        lines.append(f"- {name}: {ours} {metric} = {part['ours'].iloc[0]:.3f}; beats {listed(part[part['win']])}; "
                     f"loses to {listed(part[part['loss']])}; not distinguishable from {listed(undecided)} "
                     f"(paired difference, 95 % CI over {part['n'].max()} seeds).")
    return "\n".join(lines)


def describe_comparison(table: pd.DataFrame, metric: str, *, group: str = "scenario", ours: str = "cisformer",
                        floor: str | None = "floor", tie: float = TIE) -> str:
    """One sentence per group, computed from the numbers: how ``ours`` compares with the best other method -
    the floor included, since it reads no test information and any method must beat it - and with the floor
    alone on ``metric`` (means over seeds); differences smaller than ``tie`` are called ties. Used for the
    notebooks' honest prose.

    Parameters
    ----------
    table
        Long metrics table with columns ``group``, ``method``, ``metric`` and ``value``.
    metric
        Metric compared; higher is taken as better.
    group
        Column that groups the rows (default ``"scenario"``).
    ours
        The method described (default ``"cisformer"``).
    floor
        Name of the floor method (default ``"floor"``); ``None`` or absent: no comparison with it.
    tie
        Largest absolute difference of means called a tie (default :data:`TIE`, 0.005).

    Returns
    -------
    str
        One line per group, each starting with ``"- "``.
    """
    summary = summarize(table[table["metric"] == metric], group)
    lines = []
    for name, part in summary.groupby(group, sort=False):
        means = part.set_index("method")["mean"].dropna()
        if ours not in means:
            lines.append(f"- {name}: {ours} was not run, so no comparison on {metric}.")
            continue
        others = means.drop([ours])
        sentence = f"- {name}: {ours} {metric} = {means[ours]:.3f}"
        if len(others):
            best = others.idxmax()
            diff = means[ours] - others.max()
            verdict = "ties" if abs(diff) < tie else ("wins" if diff > 0 else "loses")
            sentence += f"; best other method (floor included) {best} = {others.max():.3f}, so {ours} {verdict}"
            sentence += f" (difference {diff:+.3f})"
        if floor in means:
            diff = means[ours] - means[floor]
            relation = "ties" if abs(diff) < tie else ("is above" if diff > 0 else "is below")
            sentence += f"; it {relation} the floor ({floor} = {means[floor]:.3f})"
        lines.append(sentence + ".")
    return "\n".join(lines)
