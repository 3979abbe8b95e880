"""What a call costs, from the price table in settings (LLM_PRICES). Pure: no model, no I/O.

Prices are per million tokens, input and output apart, in the account's currency. A model not
in the table has no cost (None), never a guess; the one match beyond an exact name is a dated
snapshot of a listed model ("gpt-4o-mini-2024-07-18" is "gpt-4o-mini"), which providers
report in place of the name asked for.
"""

import re
from decimal import Decimal

from django.conf import settings

_SNAPSHOT = re.compile(r"^-\d{4}-\d{2}-\d{2}$")
_MILLION = Decimal(1_000_000)


def price_for(model: str) -> tuple[Decimal, Decimal] | None:
    """(input, output) price per million tokens, or None for a model without a price."""
    table: dict[str, tuple[Decimal, Decimal]] = settings.LLM_PRICES
    if model in table:
        return table[model]
    for name, price in table.items():
        if model.startswith(name) and _SNAPSHOT.match(model[len(name) :]):
            return price
    return None


def cost_of(*, model: str, input_tokens: int, output_tokens: int) -> Decimal | None:
    price = price_for(model)
    if price is None:
        return None
    input_price, output_price = price
    return (input_tokens * input_price + output_tokens * output_price) / _MILLION
