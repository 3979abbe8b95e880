"""The pure context builder: plain values in, chosen messages out. No database."""

import pytest

from chatengine.exceptions import ContextOverflow
from llm.context import compute_budget, select_messages
from llm.tokens import REPLY_PRIMING_TOKENS
from llm.types import HistoryMessage, ToolCall

SYSTEM_TOKENS = 10


def msg(seq, role="user", tokens=10, **extra) -> HistoryMessage:
    return HistoryMessage(seq=seq, role=role, content=f"m{seq}", token_count=tokens, **extra)


def build(history, *, budget, pinned=(), system_prompt="Be brief.", total=None):
    history = list(history)
    return select_messages(
        system_prompt=system_prompt,
        system_prompt_tokens=SYSTEM_TOKENS,
        pinned=pinned,
        history_newest_first=list(reversed(history)),
        total_messages=len(history) if total is None else total,
        budget=budget,
        encoding="cl100k_base",
    )


def fixed_cost(system_prompt=True):
    return REPLY_PRIMING_TOKENS + (SYSTEM_TOKENS if system_prompt else 0)


class TestBudget:
    def test_it_is_the_window_minus_output_and_margin(self):
        assert compute_budget(context_window=8192, max_output_tokens=1024, safety_margin=32) == 7136

    def test_no_room_left_is_an_overflow(self):
        with pytest.raises(ContextOverflow):
            compute_budget(context_window=1000, max_output_tokens=990, safety_margin=10)


class TestTrimming:
    def test_everything_fits_in_chronological_order_after_the_system_prompt(self):
        history = [msg(1), msg(2, "assistant"), msg(3)]
        ctx = build(history, budget=1000)
        assert [m.role for m in ctx.messages] == ["system", "user", "assistant", "user"]
        assert [m.content for m in ctx.messages[1:]] == ["m1", "m2", "m3"]
        assert ctx.tokens == fixed_cost() + 30
        assert (ctx.messages_included, ctx.messages_dropped) == (3, 0)
        assert (ctx.first_seq, ctx.last_seq) == (1, 3)

    def test_a_budget_exactly_equal_to_the_total_keeps_everything(self):
        history = [msg(i) for i in range(1, 6)]
        ctx = build(history, budget=fixed_cost() + 50)
        assert ctx.messages_included == 5
        assert ctx.tokens == ctx.budget

    def test_one_token_less_drops_the_oldest_message(self):
        history = [msg(i) for i in range(1, 6)]
        ctx = build(history, budget=fixed_cost() + 50 - 1)
        assert ctx.messages_included == 4
        assert ctx.messages_dropped == 1
        assert ctx.first_seq == 2
        assert ctx.tokens == fixed_cost() + 40

    def test_the_walk_stops_at_the_first_message_that_does_not_fit(self):
        # m2 is big: it does not fit, so m1 (small, older) is not sent either: no gaps.
        history = [msg(1, tokens=5), msg(2, "assistant", tokens=500), msg(3)]
        ctx = build(history, budget=fixed_cost() + 100)
        assert [m.content for m in ctx.messages[1:]] == ["m3"]
        assert ctx.messages_dropped == 2

    def test_the_system_prompt_is_kept_even_when_history_is_trimmed(self):
        history = [msg(i) for i in range(1, 50)]
        ctx = build(history, budget=fixed_cost() + 10)
        assert ctx.messages[0].role == "system"
        assert ctx.messages[0].content == "Be brief."
        assert [m.content for m in ctx.messages[1:]] == ["m49"]

    def test_system_messages_are_always_kept(self):
        system = msg(1, "system", tokens=7)
        history = [system, *[msg(i) for i in range(2, 30)]]
        ctx = build(history, budget=fixed_cost() + 7 + 20, pinned=[system])
        assert [m.content for m in ctx.messages] == ["Be brief.", "m1", "m28", "m29"]
        assert ctx.messages_included == 3

    def test_no_system_prompt_sends_no_system_message(self):
        ctx = build([msg(1)], budget=100, system_prompt="")
        assert [m.role for m in ctx.messages] == ["user"]
        assert ctx.tokens == fixed_cost(system_prompt=False) + 10


class TestOverflow:
    def test_a_newest_user_message_that_alone_does_not_fit_is_an_overflow_saying_by_how_much(self):
        history = [msg(1), msg(2, tokens=200)]
        with pytest.raises(ContextOverflow) as err:
            build(history, budget=fixed_cost() + 150)
        assert err.value.details["over_by"] == 50
        assert "50 tokens" in err.value.message

    def test_the_newest_user_message_exactly_filling_the_budget_is_accepted(self):
        ctx = build([msg(1), msg(2, tokens=150)], budget=fixed_cost() + 150)
        assert [m.content for m in ctx.messages[1:]] == ["m2"]

    def test_a_pending_message_is_sent_last_and_counted(self):
        pending = HistoryMessage(seq=None, role="user", content="new", token_count=4)
        ctx = select_messages(
            system_prompt="",
            system_prompt_tokens=0,
            pinned=[],
            history_newest_first=[pending, msg(2, "assistant"), msg(1)],
            total_messages=3,
            budget=1000,
            encoding="cl100k_base",
        )
        assert [m.content for m in ctx.messages] == ["m1", "m2", "new"]
        assert ctx.last_seq == 2
        assert ctx.with_pending_seq(3).last_seq == 3


def tool_exchange(start):
    """seq start: assistant calls two tools; start+1, start+2: their results."""
    calls = (
        ToolCall(id=f"c{start}a", name="f", arguments="{}"),
        ToolCall(id=f"c{start}b", name="g", arguments="{}"),
    )
    return [
        msg(start, "assistant", tool_calls=calls),
        msg(start + 1, "tool", tool_call_id=f"c{start}a"),
        msg(start + 2, "tool", tool_call_id=f"c{start}b"),
    ]


class TestToolCalls:
    def test_a_call_and_its_results_travel_together(self):
        history = [msg(1), *tool_exchange(2), msg(5, "assistant"), msg(6)]
        ctx = build(history, budget=1000)
        roles = [m.role for m in ctx.messages[1:]]
        assert roles == ["user", "assistant", "tool", "tool", "assistant", "user"]
        assert ctx.messages[2].tool_calls[0].id == "c2a"
        assert ctx.messages[3].tool_call_id == "c2a"

    @pytest.mark.parametrize(
        ("room", "expected"),
        [
            # m6 + m5 cost 20; the call and its two results cost 30 together.
            (49, ["assistant", "user"]),
            (50, ["assistant", "tool", "tool", "assistant", "user"]),
        ],
    )
    def test_trimming_never_splits_a_call_from_its_results(self, room, expected):
        history = [msg(1), *tool_exchange(2), msg(5, "assistant"), msg(6)]
        ctx = build(history, budget=fixed_cost() + room)
        assert [m.role for m in ctx.messages[1:]] == expected

    def test_orphaned_tool_results_are_not_sent(self):
        history = [msg(1), msg(2, "tool", tool_call_id="nobody"), msg(3)]
        ctx = build(history, budget=1000)
        assert [m.content for m in ctx.messages[1:]] == ["m1", "m3"]
        assert ctx.messages_dropped == 1

    def test_a_call_without_all_its_results_is_not_sent(self):
        exchange = tool_exchange(2)[:2]  # the second result never came
        history = [msg(1), *exchange, msg(4)]
        ctx = build(history, budget=1000)
        assert [m.role for m in ctx.messages[1:]] == ["user", "user"]


def test_the_readme_worked_example_holds():
    budget = compute_budget(context_window=8192, max_output_tokens=1024, safety_margin=32)
    history = [msg(i, "user" if i % 2 == 0 else "assistant", tokens=30) for i in range(1, 501)]
    ctx = select_messages(
        system_prompt="(20 tokens)",
        system_prompt_tokens=20,
        pinned=[],
        history_newest_first=list(reversed(history)),
        total_messages=500,
        budget=budget,
        encoding="cl100k_base",
    )
    assert ctx.as_record() == {
        "first_seq": 264,
        "last_seq": 500,
        "messages_included": 237,
        "messages_dropped": 263,
        "tokens": 7133,
        "budget": 7136,
        "encoding": "cl100k_base",
        "strategy": "window",
        "summary": None,
    }
    with pytest.raises(ContextOverflow) as err:
        select_messages(
            system_prompt="(20 tokens)",
            system_prompt_tokens=20,
            pinned=[],
            history_newest_first=[
                HistoryMessage(seq=None, role="user", content="x", token_count=8000)
            ],
            total_messages=1,
            budget=budget,
            encoding="cl100k_base",
        )
    assert err.value.details["over_by"] == 887
