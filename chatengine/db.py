"""Row reads for the hottest paths, without the ORM's per-query building.

Building a `.get()` or a filtered list costs 0.5-1 ms of CPU here, several times the query
itself; the session row is read for the ownership check on every API request, and the
context's rows before every reply (bench/, "History page", "Context build"). The SQL is built
once per model and filter, and each value goes through the converters the ORM applies (JSON
decoding, SQLite's booleans and datetimes), so the instances (`fetch_instance[s]`) and the
value tuples (`fetch_values`) are the ones the ORM would return.
"""

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, TypeVar

from django.db import connections, router
from django.db.models import Model

M = TypeVar("M", bound=Model)


def fetch_instance(model: type[M], *, where: tuple[str, ...], params: list[Any]) -> M | None:
    """The one `model` row whose fields in `where` equal `params` (in order), or None.

    `where` names model fields by attname (e.g. ("id", "user_id")); more than one match is
    a programming error, as with `.get()`, so filter on a unique key.
    """
    rows = _fetch(model, where=where, params=params, order_by=(), limit=2)
    if len(rows) > 1:
        raise model.MultipleObjectsReturned(f"fetch_instance({model.__name__}, {where})")
    return rows[0] if rows else None


def fetch_instances(
    model: type[M],
    *,
    where: tuple[str, ...],
    params: list[Any],
    order_by: tuple[str, ...],
    limit: int | None = None,
) -> list[M]:
    """The `model` rows matching `where`, ordered by `order_by`, at most `limit` of them.

    `where` entries are attnames compared for equality, or with a lookup as in the ORM:
    "seq__lt", "seq__lte", "seq__gt", "seq__gte"; all must hold, except that a tuple of
    entries holds when any of them does (("role", "pinned"): role = %s OR pinned = %s).
    `params` follow the entries in order. `order_by` entries are attnames, "-" first for
    descending.
    """
    return _fetch(model, where=where, params=params, order_by=order_by, limit=limit)


@dataclass(frozen=True)
class Read:
    """One read of `fetch_values`: `where` and `order_by` as for `fetch_instances`."""

    where: tuple[str | tuple[str, ...], ...]
    params: list[Any]
    order_by: tuple[str, ...] = ()
    limit: int | None = None


def fetch_values(
    model: type[Model], *, columns: tuple[str, ...], reads: Sequence[Read]
) -> list[list[tuple]]:
    """For each read, its rows as tuples of `columns` (attnames), in its `order_by`; all the
    reads in one round trip (UNION ALL).

    Only the columns asked for, converted as the ORM converts them (JSON decoded), with no
    model instance built: for the reads whose rows go straight into plain values (the context
    a reply sends). Each read's `order_by` must name selected columns.
    """
    alias = router.db_for_read(model)
    connection = connections[alias]
    shape = tuple((r.where, r.order_by, r.limit is not None) for r in reads)
    sql, converters, where_fields = _values_template(
        model, columns, shape, connection.vendor, alias
    )
    prepared: list[Any] = []
    for read, fields in zip(reads, where_fields, strict=True):
        prepared += [
            f.get_db_prep_value(v, connection) for f, v in zip(fields, read.params, strict=True)
        ]
        if read.limit is not None:
            prepared.append(read.limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, prepared)
        rows = cursor.fetchall()
    if converters:
        converted = []
        # A NULL stays None through every converter Django has: with one converted column,
        # rows where it is NULL (no tool_calls: most of a context) are taken as they are.
        only = converters[0][0] if len(converters) == 1 else None
        for row in rows:
            if only is not None and row[only] is None:
                converted.append(row)
                continue
            values = list(row)
            for index, convert, expression in converters:
                for fn in convert:
                    values[index] = fn(values[index], expression, connection)
            converted.append(tuple(values))
        rows = converted
    if len(reads) == 1:
        return [rows]
    # The first column says which read a row answers. UNION ALL promises no order across or
    # within its parts, so each part is put in its order here (a run already in order costs
    # one pass).
    parts: list[list[tuple]] = [[] for _ in reads]
    for row in rows:
        parts[row[0]].append(row[1:])
    index_of = {name: i for i, name in enumerate(columns)}
    for part, read in zip(parts, reads, strict=True):
        for name in reversed(read.order_by):
            part.sort(key=itemgetter(index_of[name.lstrip("-")]), reverse=name[0] == "-")
    return parts


def _fetch(model, *, where, params, order_by, limit) -> list:
    alias = router.db_for_read(model)
    connection = connections[alias]
    sql, attnames, converters, where_fields = _template(
        model, where, order_by, limit is not None, connection.vendor, alias
    )
    prepared = [
        f.get_db_prep_value(v, connection) for f, v in zip(where_fields, params, strict=True)
    ]
    if limit is not None:
        prepared.append(limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, prepared)
        rows = cursor.fetchall()
    instances = []
    for row in rows:
        values = list(row)
        for index, convert, expression in converters:
            for fn in convert:
                values[index] = fn(values[index], expression, connection)
        instances.append(model.from_db(alias, attnames, values))
    return instances


_OPERATORS = {"": "=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


def _select(model, fields, where, order_by, limited: bool, connection) -> tuple[str, list]:
    """SELECT `fields` FROM the model's table WHERE ... [ORDER BY ...] [LIMIT %s]."""
    quote = connection.ops.quote_name
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    table = model._meta.db_table
    conditions, where_fields = [], []
    for entry in where:
        # A tuple of entries is one condition, their OR (its params in order).
        alternatives = []
        for name_lookup in entry if isinstance(entry, tuple) else (entry,):
            name, _, lookup = name_lookup.partition("__")
            field = by_attname[name]
            alternatives.append(f"{quote(field.column)} {_OPERATORS[lookup]} %s")
            where_fields.append(field)
        conditions.append(
            alternatives[0] if len(alternatives) == 1 else f"({' OR '.join(alternatives)})"
        )
    sql = "SELECT {} FROM {} WHERE {}".format(
        ", ".join(f"{quote(table)}.{quote(f.column)}" for f in fields),
        quote(table),
        " AND ".join(conditions),
    )
    if order_by:
        sql += " ORDER BY " + ", ".join(
            quote(by_attname[name.lstrip("-")].column) + (" DESC" if name[0] == "-" else "")
            for name in order_by
        )
    if limited:
        sql += " LIMIT %s"
    return sql, where_fields


def _converters(model, fields, connection, *, offset: int = 0) -> list:
    """(index, the ORM's from-database converters, column) for each field that has any."""
    table = model._meta.db_table
    converters = []
    for index, field in enumerate(fields):
        column = field.get_col(table)
        convert = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if convert:
            converters.append((index + offset, convert, column))
    return converters


@functools.cache
def _template(model, where, order_by, limited: bool, vendor: str, alias: str):
    connection = connections[alias]
    fields = model._meta.concrete_fields
    sql, where_fields = _select(model, fields, where, order_by, limited, connection)
    return sql, [f.attname for f in fields], _converters(model, fields, connection), where_fields


@functools.cache
def _values_template(model, columns, shape, vendor: str, alias: str):
    connection = connections[alias]
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    fields = [by_attname[name] for name in columns]
    selects, where_fields = [], []
    for where, order_by, limited in shape:
        sql, read_fields = _select(model, fields, where, order_by, limited, connection)
        selects.append(sql)
        where_fields.append(read_fields)
    if len(selects) == 1:
        return selects[0], _converters(model, fields, connection), where_fields
    # Each read in a subquery of its own: SQLite allows no ORDER BY or LIMIT on a bare part of
    # a UNION, and the part number tags its rows.
    names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    sql = " UNION ALL ".join(
        f"SELECT {i}, {names} FROM ({select}) AS part{i}" for i, select in enumerate(selects)
    )
    return sql, _converters(model, fields, connection, offset=1), where_fields
