"""`make bench`'s report: the chatengine / plain DRF ratios and the context table in
latest.md, and the pictures drawn beside it."""

import pytest

from bench.run import render_markdown


def _figures(rps: float, p50: float = 10.0) -> dict:
    return {"rps": rps, "p50_ms": p50, "p99_ms": 2 * p50, "errors": 0, "requests": 100}


RESULTS = {
    "meta": {"started": "2026-12-02 08:00:00 UTC", "machine": "x86_64, 2 cores"},
    "plain": {
        "server": "gunicorn, 2 sync workers (WSGI)",
        "connections": 16,
        "history_messages": 10_000,
        "endpoints": {
            "noop": {"plain": _figures(500), "chatengine": _figures(210)},
            "history": {
                "plain": _figures(400),
                "chatengine-redis": _figures(300),
                "chatengine-postgres": _figures(200),
            },
            "append": {"plain": _figures(200), "chatengine": _figures(190)},
        },
    },
    "context": {
        str(size): {
            "median_ms": 3.4,
            "raw_floor_ms": 1.7,
            "messages_included": 101,
            "tokens": 7084,
            "budget": 7136,
        }
        for size in (100, 10_000, 100_000)
    },
    "langchain": {
        "100": {"median_ms": 6.8, "messages_included": 100, "budget": 7136},
        "10000": {"median_ms": 425.0, "messages_included": 100, "budget": 7136},
        "100000": {"median_ms": 4981.0, "messages_included": 100, "budget": 7136},
    },
}


def test_report_shows_chatengine_over_plain_drf_for_each_endpoint():
    markdown = render_markdown(RESULTS)

    assert "| authenticated no-op | 500 | 210 | **0.42** |" in markdown
    assert "| history, newest 50, from Redis | 400 | 300 | **0.75** |" in markdown
    assert "| history, newest 50, cache off (PostgreSQL) | 400 | 200 | **0.50** |" in markdown
    assert "| append | 200 | 190 | **0.95** |" in markdown


def test_report_sets_the_context_build_beside_its_floor_and_langchain():
    markdown = render_markdown(RESULTS)

    # history | chatengine | floor | chatengine / floor | LangChain | LangChain / chatengine
    assert "| 100,000 | 3.40 | 1.70 | 2.00 | 4,981.0 | 1,465 | 101 (LangChain 100) |" in markdown
    assert "| 100 | 3.40 | 1.70 | 2.00 | 6.8 | 2.00 | 101 (LangChain 100) |" in markdown
    assert "Ratio 100,000 / 100: 1.00" in markdown


def test_pictures_are_drawn_for_the_sections_that_ran(tmp_path):
    charts = pytest.importorskip("bench.charts", reason="bench extras: bench/requirements.txt")

    drawn = charts.draw(RESULTS, tmp_path)
    only_plain = charts.draw({"meta": RESULTS["meta"], "plain": RESULTS["plain"]}, tmp_path / "x")

    assert sorted(p.name for p in drawn) == ["context.png", "endpoints.png"]
    for picture in drawn:
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in only_plain] == ["endpoints.png"]
