"""JSONFragments go out as stored, in exactly the bytes DRF would write for their values."""

from rest_framework.renderers import JSONRenderer as DRFJSONRenderer

from chatengine.renderers import JSONFragments, JSONRenderer, dumps

VALUES = [{"a": 1, "t": "é\u2028"}, {"b": None, "list": [1, 2.5, True]}]


def envelope(results):
    return {"results": results, "next": "http://x/?a=1&b=é", "has_more": True, "none": None}


def test_fragments_render_as_drf_renders_their_values():
    fragments = JSONFragments([dumps(v) for v in VALUES])
    assert JSONRenderer().render(envelope(fragments)) == DRFJSONRenderer().render(envelope(VALUES))


def test_an_empty_fragment_list_is_an_empty_array():
    got = JSONRenderer().render(envelope(JSONFragments([])))
    assert got == DRFJSONRenderer().render(envelope([]))


def test_indented_output_lays_fragments_out_like_any_other_list():
    fragments = JSONFragments([dumps(v) for v in VALUES])
    media = "application/json; indent=2"
    assert JSONRenderer().render(envelope(fragments), media) == DRFJSONRenderer().render(
        envelope(VALUES), media
    )


def test_data_without_fragments_is_rendered_by_drf():
    for data in (None, [1, 2], {"a": [1]}, "text"):
        assert JSONRenderer().render(data) == DRFJSONRenderer().render(data)
