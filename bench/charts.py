"""Pictures of a bench run, beside its results: context.png and endpoints.png.

matplotlib with the Agg backend (files only, no display). Each picture is drawn only when
its sections ran; returns the files written.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

from bench.lib import plain_ratios

PLAIN_COLOUR = "#9e9e9e"
ENGINE_COLOUR = "#1f6fb4"
FLOOR_COLOUR = "#2e9d4a"
LANGCHAIN_COLOUR = "#d9822b"


def draw(results: dict, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if results.get("context") or results.get("langchain"):
        written.append(draw_context(results, directory / "context.png"))
    if results.get("plain"):
        written.append(draw_endpoints(results, directory / "endpoints.png"))
    return written


def _run_label(results: dict) -> str:
    return f"run {results['meta']['started']}, {results['meta']['machine']}"


def draw_context(results: dict, path: Path) -> Path:
    """One turn's context time against history length, log-log: a flat line is a cost that
    follows the window, a rising one a cost that follows the history."""
    series = []
    context, langchain = results.get("context") or {}, results.get("langchain") or {}
    if langchain:
        series.append(("LangChain: load history + trim_messages", langchain, "median_ms",
                       LANGCHAIN_COLOUR, "s"))  # fmt: skip
    if context:
        series.append(("chatengine: build_context", context, "median_ms", ENGINE_COLOUR, "o"))
        series.append(("floor: raw read of the window (psycopg)", context, "raw_floor_ms",
                       FLOOR_COLOUR, "^"))  # fmt: skip
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for label, figures, key, colour, marker in series:
        sizes = sorted(int(s) for s in figures)
        values = [figures[str(s)][key] for s in sizes]
        ax.plot(sizes, values, marker=marker, color=colour, label=label, linewidth=2)
        for x, y in zip(sizes, values, strict=True):
            ax.annotate(_ms(y), (x, y), textcoords="offset points", xytext=(0, 8),
                        ha="center", fontsize=9, color=colour)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("messages in the session's history")
    ax.set_ylabel("time per turn (ms, log scale)")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.set_title("Context for one turn, same token budget, same PostgreSQL")
    ax.grid(True, which="major", alpha=0.3)
    ax.margins(x=0.15, y=0.2)
    ax.legend(loc="upper left", fontsize=9)
    fig.text(0.99, 0.01, _run_label(results), ha="right", fontsize=7, color="#666666")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def draw_endpoints(results: dict, path: Path) -> Path:
    """req/s per endpoint, chatengine beside the plain DRF peer, with the ratio above."""
    plain = results["plain"]
    rows = plain_ratios(plain)
    fig, ax = plt.subplots(figsize=(9, 5), dpi=120)
    width = 0.38
    xs = range(len(rows))
    base = [r[3]["rps"] for r in rows]
    engine = [r[2]["rps"] for r in rows]
    ax.bar([x - width / 2 for x in xs], base, width, label="plain DRF", color=PLAIN_COLOUR)
    ax.bar([x + width / 2 for x in xs], engine, width, label="chatengine", color=ENGINE_COLOUR)
    for x, b, e in zip(xs, base, engine, strict=True):
        ax.annotate(f"{e / b:.2f}x" if b else "n/a", (x + width / 2, e),
                    textcoords="offset points", xytext=(0, 4), ha="center", fontsize=10,
                    fontweight="bold", color=ENGINE_COLOUR)  # fmt: skip
    ax.set_xticks(list(xs))
    ax.set_xticklabels([_wrap(r[0]) for r in rows], fontsize=9)
    ax.set_ylabel("requests per second (higher is better)")
    ax.set_title(f"chatengine / plain DRF, {plain['server']}, {plain['connections']} connections")
    ax.margins(y=0.15)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=9)
    fig.text(0.99, 0.01, _run_label(results), ha="right", fontsize=7, color="#666666")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f} ms"
    return f"{value:.1f} ms" if value >= 1 else f"{value:.2f} ms"


def _wrap(label: str) -> str:
    return label.replace(", ", ",\n", 1)
