"""bench_setup's chart: the latency distribution and the CPU per setup as one PNG."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from benchlib import quantile
from setup_report import _f, ratios
from setup_results import STEPS, Run


def write_chart(runs: Sequence[Run], path: str, args: argparse.Namespace) -> bool:
    """The latency distribution as a PNG: one column per concurrency, three rows:
    per-command p50 (bars) with p95/p99 marks, the ECDF of whole-setup times (and of
    connect-ap -> claimed), and the server CPU per completed setup with ours/theirs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    except ImportError:
        print(
            "bench_setup: --chart needs matplotlib, which is not installed: "
            "pip install matplotlib (into this environment), then run again; no chart written",
            file=sys.stderr,
        )
        return False
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")

    def log_axis(axis: Any) -> None:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(NullFormatter())

    ks = sorted({r.concurrency for r in runs})
    fig, axes = plt.subplots(
        3,
        len(ks),
        figsize=(max(8.0, 5.6 * len(ks) + 0.6), 13),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 3, 1.7]},
        constrained_layout=True,
    )
    colours = {"peer": "#8c8c8c"}
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"]
    for i, label in enumerate(dict.fromkeys(r.label for r in runs if r.server != "peer")):
        colours[label] = palette[i % len(palette)]
    ratio_by = {(r["concurrency"], r["ours"]): r["ratio"] for r in ratios(runs, args.target)}
    short = ["device\nInfo", "scan", "public\nKey", "setClaim\nCode", "configure", "connect"]
    for col, k in enumerate(ks):
        group = [r for r in runs if r.concurrency == k]
        # row 1: per-command latency
        ax = axes[0][col]
        width = 0.84 / max(1, len(group))
        for j, r in enumerate(group):
            xs, p50s, p95s, p99s = [], [], [], []
            for si, name in enumerate(STEPS):
                values = sorted(r.step_values_ms(name))
                if not values:
                    continue
                xs.append(si - 0.42 + width * (j + 0.5))
                p50s.append(quantile(values, 0.5))
                p95s.append(quantile(values, 0.95))
                p99s.append(quantile(values, 0.99))
            colour = colours.get(r.label, "#333333")
            ax.bar(xs, p50s, width * 0.92, color=colour, alpha=0.9, label=r.label)
            ax.scatter(xs, p95s, marker="_", s=80, color="black", linewidths=1.2, zorder=3)
            ax.scatter(
                xs,
                p99s,
                marker="v",
                s=16,
                color=colour,
                edgecolor="black",
                linewidths=0.5,
                zorder=3,
            )
        ax.set_xticks(range(len(STEPS)))
        ax.set_xticklabels(short, fontsize=8)
        ax.set_yscale("log")
        log_axis(ax.yaxis)
        ax.set_ylabel("ms (log scale)")
        ax.set_title(
            f"K = {k} concurrent setups: per-command latency\n"
            "bar = p50, dash = p95, triangle = p99",
            fontsize=10,
        )
        ax.grid(axis="y", which="both", alpha=0.25)
        # row 2: ECDF of whole setups
        ax = axes[1][col]
        for r in group:
            colour = colours.get(r.label, "#333333")
            values = sorted(r.durations_ms())
            if values:
                ys = [(i + 1) / len(values) for i in range(len(values))]
                rate = r.summary()["setups_per_s"]
                ax.step(
                    values,
                    ys,
                    where="post",
                    color=colour,
                    linewidth=1.6,
                    label=f"{r.label}: setup ({_f(rate)}/s)",
                )
            claims = sorted(r.claim_values_ms())
            if claims:
                ys = [(i + 1) / len(claims) for i in range(len(claims))]
                ax.step(
                    claims,
                    ys,
                    where="post",
                    linestyle="--",
                    color=colour,
                    label=f"{r.label}: connect-ap → claimed",
                )
        ax.set_xscale("log")
        log_axis(ax.xaxis)
        ax.set_xlabel("ms (log scale)")
        ax.set_ylabel("fraction of setups ≤ x")
        ax.set_ylim(0, 1.02)
        ax.set_title(
            f"K = {k}: whole-setup time, ECDF\n(start → connect callback; "
            "with the cloud → claimed)",
            fontsize=10,
        )
        ax.grid(which="both", alpha=0.25)
        ax.legend(fontsize=6.5, loc="upper left")
        # row 3: server CPU per setup
        ax = axes[2][col]
        names = [r.label for r in group]
        cpus = [r.summary()["server_cpu_ms_per_setup"] or 0.0 for r in group]
        bars = ax.barh(range(len(group)), cpus, color=[colours.get(n, "#333") for n in names])
        ax.set_yticks(range(len(group)))
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("server CPU per completed setup, ms")
        top = max(cpus or [1.0])
        ax.set_xlim(0, top * 1.35)
        for bar, r, cpu in zip(bars, group, cpus, strict=True):
            ratio = ratio_by.get((k, r.label))
            text = f"{cpu:.2f}" + ("" if ratio is None else f"  ({ratio:.2f} x peer)")
            ax.text(
                cpu + top * 0.01, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=7
            )
        ax.set_title(
            f"K = {k}: server CPU per setup (target: ours ≤ {args.target:g} x peer)", fontsize=10
        )
        ax.grid(axis="x", alpha=0.25)
    fig.suptitle(
        "softap-sim onboarding bench: real @particle/softap-setup 4.1.2 full setups\n"
        f"{args.timing} timing, {args.protocol.upper()} to ours; "
        "peer = softap-emulator-js 1.0.3 (TCP)",
        fontsize=11,
    )
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(
        handles=list(handles.values()),
        labels=list(handles),
        loc="outside lower center",
        ncol=min(4, len(handles)),
        fontsize=8,
        frameon=False,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
