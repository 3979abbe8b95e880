"""The Markdown export: whatever users wrote is shown as written and never becomes part of
the document's structure (headings, lists, links, emphasis, raw HTML). Checked by parsing the
export with a CommonMark parser, as a reader's tool would."""

import pytest
from markdown_it import MarkdownIt

from conversations import services
from conversations.exports import iter_markdown
from conversations.tests.factories import ChatSessionFactory, UserFactory

HOSTILE_TITLES = [
    "Trip\n# Forged heading\n\n- forged list item",
    "Title\r## Forged by a carriage return",
    "Title\u2028# After a line separator",
    "Setext\n===",
    "<script>alert(1)</script> & <i>italic</i>",
    "[click](https://evil.example) ![img](x) <https://evil.example>",
    "*emph* _emph_ **strong** `code` ~~strike~~ ## trailing ##",
    "1. ordered\n> quote",
    "\\` backslash \\\\ before punctuation \\*",
]
HOSTILE_NAMES = ["<i>", "bot\n## forged", "[x](javascript:alert(1))", "`tick", "*"]
HOSTILE_CONTENT = "```\n# not a heading\n```\n<b>html</b>\n````\n[link](x)"


def parse(markdown: str) -> list:
    return MarkdownIt("commonmark").parse(markdown)


def export(session) -> str:
    return "".join(iter_markdown([session]))


def visible_text(tokens, index: int) -> str:
    """The text a reader sees in the inline token at `index` (after its heading_open)."""
    return "".join(child.content for child in tokens[index].children)


@pytest.mark.django_db
@pytest.mark.parametrize("title", HOSTILE_TITLES)
def test_a_hostile_title_is_one_heading_of_plain_text(title):
    session = ChatSessionFactory(title=title, system_prompt="")
    services.append_message(session=session, role="user", content="hi")

    tokens = parse(export(session))

    headings = [t for t in tokens if t.type == "heading_open"]
    assert [h.tag for h in headings] == ["h1", "h2"]  # the session, its one message
    first = tokens.index(headings[0])
    expected = title.replace("\r", " ").replace("\n", " ").replace("\u2028", " ")
    assert visible_text(tokens, first + 1).strip() == expected.strip()
    assert [c.type for c in tokens[first + 1].children] == ["text"] * len(
        tokens[first + 1].children
    )
    assert sum(t.type == "bullet_list_open" for t in tokens) == 1  # the session's facts


@pytest.mark.django_db
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_author_name_stays_text_in_its_heading(name):
    session = ChatSessionFactory(title="t", system_prompt="")
    services.append_message(session=session, role="user", content="hi", name=name)

    tokens = parse(export(session))

    headings = [i for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert len(headings) == 2
    inline = tokens[headings[1] + 1]
    assert {c.type for c in inline.children} == {"text"}
    assert f"({name.replace(chr(10), ' ')})" in visible_text(tokens, headings[1] + 1)


@pytest.mark.django_db
def test_hostile_content_ids_and_model_names_stay_in_their_code(settings):
    user = UserFactory(username="a_b*c")
    session = ChatSessionFactory(
        user=user, title="t", system_prompt="<b>prompt</b>\n# h", model="m`1 <i>"
    )
    services.append_message(session=session, role="user", content=HOSTILE_CONTENT)
    services.append_message(
        session=session,
        role="assistant",
        content="",
        model="gpt`x\n# forged",
        finish_reason="stop",
        tool_calls=[
            {"id": "c`1", "type": "function", "function": {"name": "f", "arguments": "<i>"}}
        ],
    )
    services.append_message(
        session=session, role="tool", content="{}", tool_call_id="``c`1\n# forged"
    )

    markdown = export(session)
    tokens = parse(markdown)

    assert [t.tag for t in tokens if t.type == "heading_open"] == ["h1", "h2", "h2", "h2", "h2"]
    everything = tokens + [child for t in tokens for child in (t.children or [])]
    assert not [t for t in everything if t.type.startswith(("html_", "link_", "image"))]
    # The export's own emphasis only: the reply line of the one generated message.
    assert [t.type for t in everything if t.type in ("em_open", "strong_open")] == ["em_open"]
    fences = [t.content for t in tokens if t.type == "fence"]
    assert "<b>prompt</b>\n# h\n" in fences
    assert HOSTILE_CONTENT + "\n" in fences
    codes = [c.content for c in everything if c.type == "code_inline"]
    assert "m`1 <i>" in codes
    assert "gpt`x # forged" in codes
    assert "``c`1 # forged" in codes
    assert "- user: a\\_b\\*c" in markdown


@pytest.mark.django_db
def test_the_markdown_export_shows_where_a_fork_began_and_how_often_an_answer_was_regenerated():
    from conversations import branching

    parent = ChatSessionFactory()
    services.append_message(session=parent, role="user", content="hi", token_count=1)
    services.append_message(session=parent, role="assistant", content="a", token_count=1)
    branching.replace_answer(session=parent, seq=2, answer={"content": "b", "token_count": 1})
    fork = branching.fork_session(session=parent, at_seq=1)

    assert "_regenerated 1 time_" in export(parent)
    assert f"- forked from: `{parent.pk}`, after its message #1\n" in export(fork)
