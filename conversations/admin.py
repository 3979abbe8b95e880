"""The support admin: find a conversation (by id, title, user or a phrase in it) and read it.

Support staff read; they do not rewrite history. So messages are read-only for everyone, nothing
is deleted from here, and the only session field staff may change is `archived` (the user owns
the title, prompt and metadata; archiving stops new messages and is reversible).
"""

import json
import uuid
from functools import cached_property
from typing import Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.models import F, Q, QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from chatengine import replica
from chatengine.events import log_event
from conversations import exports, selectors, services
from conversations import fields as message_fields
from conversations.models import ChatSession, Message

# Shorter phrases cannot use the trigram index (a trigram is 3 characters): they would scan
# every message, so content search starts at this length.
MIN_CONTENT_SEARCH_CHARS = 3
# Above this many rows an unfiltered changelist shows PostgreSQL's estimate instead of COUNT(*).
ESTIMATE_COUNT_ABOVE = 100_000


class EstimatedCountPaginator(Paginator):
    """Paginator that avoids COUNT(*) over a big unfiltered table on PostgreSQL.

    The admin counts the filtered queryset on every page; for the whole message table that is a
    full scan, while pg_class.reltuples (kept by ANALYZE/autovacuum) is free and close enough
    to number the pages.
    """

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        connection = connections[qs.db] if isinstance(qs, QuerySet) else None
        if connection and connection.vendor == "postgresql" and not qs.query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                    [qs.model._meta.db_table],
                )
                row = cursor.fetchone()
            if row and row[0] > ESTIMATE_COUNT_ABOVE:
                return int(row[0])
        return super().count


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def _pre(text: str) -> str:
    return format_html('<pre class="ce-pre">{}</pre>', text)


def _parse_uuid(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term)
    except ValueError:
        return None


def _streamed_export(
    *, request: HttpRequest, queryset: QuerySet[ChatSession], fmt: str
) -> StreamingHttpResponse:
    sessions = queryset.select_related("user").order_by("pk").iterator(chunk_size=100)
    if fmt == "json":
        body, content_type = exports.iter_json(sessions), "application/json; charset=utf-8"
    else:
        body, content_type = exports.iter_markdown(sessions), "text/markdown; charset=utf-8"
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response = StreamingHttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="sessions-{stamp}.{fmt}"'
    # Who exported how much: the audit trail, without any content.
    log_event("admin.sessions_exported", format=fmt, staff_user_id=request.user.pk)
    return response


class ReplicaListMixin:
    """A list page (the GET of a changelist: its rows, count, search, filters and date
    drill-down) reads from the replica when one is usable (chatengine/replica.py): staff
    searching the history tolerate its lag, and a search over every message is the heaviest
    read there is. Everything else (a session's own page, actions, saves) reads the primary.
    A replica that fails mid-page costs a retry on the primary, not an error page."""

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        using = getattr(request, "replica_alias", None)
        return queryset.using(using) if using else queryset

    def changelist_view(self, request, extra_context=None):
        using = replica.alias() if request.method == "GET" else DEFAULT_DB_ALIAS
        if using == DEFAULT_DB_ALIAS:
            return super().changelist_view(request, extra_context)
        request.replica_alias = using
        try:
            response = super().changelist_view(request, extra_context)
            # Rendered here, not on the way out, so a failing replica is caught below.
            if hasattr(response, "render"):
                response.render()
            return response
        except DatabaseError as exc:
            replica.failed(exc)
            request.replica_alias = None
            return super().changelist_view(request, extra_context)


class HasFailedReplyFilter(admin.SimpleListFilter):
    title = "has errors"
    parameter_name = "has_errors"

    def lookups(self, request, model_admin):
        return [("yes", "With a failed reply"), ("no", "Without")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(selectors.session_has_failed_reply())
        if self.value() == "no":
            return queryset.filter(~selectors.session_has_failed_reply())
        return queryset


@admin.register(ChatSession)
class ChatSessionAdmin(ReplicaListMixin, admin.ModelAdmin):
    list_display = (
        "display_title",
        "user_display",
        "n_messages",
        "n_tokens",
        "model",
        "last_activity",
        "archived",
        "has_failed_reply",
    )
    list_select_related = ("user",)
    list_filter = (
        "archived",
        ("model", admin.AllValuesFieldListFilter),
        ("last_message_at", admin.DateFieldListFilter),
        HasFailedReplyFilter,
    )
    # get_search_results below does the work; search_fields only turns the search box on.
    search_fields = ("title",)
    search_help_text = (
        "A session id (exact), or text found in the title, the username or email, or "
        f"(from {MIN_CONTENT_SEARCH_CHARS} characters) in any message."
    )
    date_hierarchy = "last_message_at"
    ordering = (F("last_message_at").desc(nulls_last=True),)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    actions = ("archive_sessions", "unarchive_sessions", "export_json", "export_markdown")

    fieldsets = (
        (
            None,
            {"fields": ("id", "user_display", "title", "model", "context_strategy", "archived")},
        ),
        (
            "Activity",
            {"fields": ("message_count", "total_tokens", "last_message_at", "created_at")},
        ),
        ("System prompt and metadata", {"fields": ("system_prompt_display", "metadata_display")}),
        ("Branching", {"fields": ("forked_from_link", "forks_display")}),
    )
    readonly_fields = (
        "forked_from_link",
        "forks_display",
        "id",
        "user_display",
        "title",
        "model",
        "context_strategy",
        "message_count",
        "total_tokens",
        "last_message_at",
        "created_at",
        "system_prompt_display",
        "metadata_display",
    )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("user")
            .annotate(has_failed_reply=selectors.session_has_failed_reply())
        )

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        session_id = _parse_uuid(term)
        if session_id is not None:
            return queryset.filter(pk=session_id), False
        match = (
            Q(title__icontains=term)
            | Q(user__username__icontains=term)
            | Q(user__email__icontains=term)
        )
        if len(term) >= MIN_CONTENT_SEARCH_CHARS:
            # `pk IN (subquery)`: PostgreSQL runs the trigram-indexed subquery once (hashed).
            match |= Q(pk__in=selectors.session_ids_with_content(phrase=term))
        return queryset.filter(match), False

    # Nobody adds sessions here (they belong to users) and nothing is deleted from the admin:
    # support archives; deletion is the owner's call through the API.
    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        changes = {field: getattr(obj, field) for field in form.changed_data}
        if changes:
            services.update_session(session=obj, **changes)

    @admin.display(description="title", ordering="title")
    def display_title(self, obj: ChatSession) -> str:
        return obj.title or f"(untitled) {str(obj.pk)[:8]}"

    @admin.display(description="user", ordering="user__username")
    def user_display(self, obj: ChatSession) -> str:
        email = obj.user.email
        return f"{obj.user.get_username()} <{email}>" if email else obj.user.get_username()

    @admin.display(description="messages", ordering="message_count")
    def n_messages(self, obj: ChatSession) -> int:
        return obj.message_count

    @admin.display(description="tokens", ordering="total_tokens")
    def n_tokens(self, obj: ChatSession) -> int:
        return obj.total_tokens

    @admin.display(description="last activity", ordering="last_message_at")
    def last_activity(self, obj: ChatSession):
        return obj.last_message_at

    @admin.display(description="has errors", boolean=True, ordering="has_failed_reply")
    def has_failed_reply(self, obj: ChatSession) -> bool:
        return obj.has_failed_reply

    @admin.display(description="system prompt")
    def system_prompt_display(self, obj: ChatSession) -> str:
        return _pre(obj.system_prompt) if obj.system_prompt else "(none)"

    @admin.display(description="metadata")
    def metadata_display(self, obj: ChatSession) -> str:
        return _pre(_pretty_json(obj.metadata)) if obj.metadata else "(none)"

    @admin.display(description="forked from")
    def forked_from_link(self, obj: ChatSession) -> str:
        if obj.forked_at_seq is None:
            return "-"
        if obj.forked_from_id is None:
            return f"a deleted session, after its message #{obj.forked_at_seq}"
        url = reverse("admin:conversations_chatsession_change", args=[obj.forked_from_id])
        return format_html(
            '<a href="{}">{}</a>, after its message #{}',
            url,
            str(obj.forked_from),
            obj.forked_at_seq,
        )

    @admin.display(description="forks")
    def forks_display(self, obj: ChatSession) -> str:
        forks = list(obj.forks.order_by("created_at", "pk")[: self.FORKS_SHOWN + 1])
        if not forks:
            return "-"
        links = format_html_join(
            ", ",
            '<a href="{}">{}</a> (at #{})',
            (
                (
                    reverse("admin:conversations_chatsession_change", args=[f.pk]),
                    str(f),
                    f.forked_at_seq,
                )
                for f in forks[: self.FORKS_SHOWN]
            ),
        )
        if len(forks) > self.FORKS_SHOWN:
            return format_html("{}, and more (the first {} shown)", links, self.FORKS_SHOWN)
        return links

    FORKS_SHOWN = 20

    @admin.action(description="Archive selected sessions", permissions=["change"])
    def archive_sessions(self, request, queryset):
        count = services.set_sessions_archived(sessions=queryset, archived=True)
        log_event("admin.sessions_archived", count=count, staff_user_id=request.user.pk)
        self.message_user(request, f"Archived {count} session(s).", messages.SUCCESS)

    @admin.action(description="Unarchive selected sessions", permissions=["change"])
    def unarchive_sessions(self, request, queryset):
        count = services.set_sessions_archived(sessions=queryset, archived=False)
        log_event("admin.sessions_unarchived", count=count, staff_user_id=request.user.pk)
        self.message_user(request, f"Unarchived {count} session(s).", messages.SUCCESS)

    @admin.action(description="Export selected sessions as JSON", permissions=["view"])
    def export_json(self, request, queryset):
        return _streamed_export(request=request, queryset=queryset, fmt="json")

    @admin.action(description="Export selected sessions as Markdown", permissions=["view"])
    def export_markdown(self, request, queryset):
        return _streamed_export(request=request, queryset=queryset, fmt="md")

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context.update(self._transcript_context(request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _transcript_context(self, request: HttpRequest, session: ChatSession) -> dict[str, Any]:
        try:
            requested = int(request.GET.get("transcript_page", "1"))
        except ValueError:
            requested = 1
        page = selectors.get_transcript_page(session=session, page=requested)
        # Where a summary cut in: after the last message it folded.
        summaries = {
            s.covers_to_seq: s
            for s in selectors.summaries_ending_between(
                session=session,
                first_seq=page.messages[0].seq if page.messages else 0,
                last_seq=page.messages[-1].seq if page.messages else 0,
            )
        }

        def page_url(number: int) -> str:
            params = request.GET.copy()
            params["transcript_page"] = str(number)
            return f"?{params.urlencode()}#transcript"

        rows = [
            {
                "message": message,
                "tool_calls_json": _pretty_json(message.tool_calls) if message.tool_calls else "",
                "context_json": _pretty_json(message.context) if message.context else "",
                "metadata_json": _pretty_json(message.metadata) if message.metadata else "",
                "versions_url": (
                    reverse("admin:conversations_message_change", args=[message.pk])
                    if message.versions > 1
                    else ""
                ),
                "summary": summaries.get(message.seq),
            }
            for message in page.messages
        ]
        return {
            "transcript": page,
            "transcript_rows": rows,
            "transcript_newest_url": page_url(1) if page.has_newer else "",
            "transcript_newer_url": page_url(page.number - 1) if page.has_newer else "",
            "transcript_older_url": page_url(page.number + 1) if page.has_older else "",
            "transcript_oldest_url": page_url(page.num_pages) if page.has_older else "",
        }


class FinishReasonFilter(admin.SimpleListFilter):
    """Fixed choices: listing the distinct values would scan the whole message table."""

    title = "finish reason"
    parameter_name = "finish_reason"

    def lookups(self, request, model_admin):
        reasons = ("stop", "length", "tool_calls", "error", "interrupted")
        return [(reason, reason) for reason in reasons]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(finish_reason=self.value())
        return queryset


@admin.register(Message)
class MessageAdmin(ReplicaListMixin, admin.ModelAdmin):
    """Content search across all sessions; each hit links to its place in the transcript."""

    list_display = (
        "created_at",
        "session_link",
        "seq",
        "role",
        "excerpt",
        "token_count",
        "model",
        "finish_reason",
    )
    list_display_links = ("created_at",)
    list_select_related = ("session",)
    list_filter = ("role", FinishReasonFilter)
    # Facet counts would COUNT(*) the whole message table once per filter choice.
    show_facets = admin.ShowFacets.NEVER
    search_fields = ("content",)
    search_help_text = (
        f"A phrase (at least {MIN_CONTENT_SEARCH_CHARS} characters) found in message content, "
        "or a session id (exact)."
    )
    ordering = ("-id",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    fields = message_fields.admin_names()  # declared in conversations/fields.py
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        session_id = _parse_uuid(term)
        if session_id is not None:
            return queryset.filter(session_id=session_id), False
        if len(term) < MIN_CONTENT_SEARCH_CHARS:
            self.message_user(
                request,
                f"Search for at least {MIN_CONTENT_SEARCH_CHARS} characters.",
                messages.WARNING,
            )
            return queryset.none(), False
        return queryset.filter(content__icontains=term), False

    # History is the user's record: read-only for everyone, superusers included.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="session", ordering="session_id")
    def session_link(self, obj: Message) -> str:
        session = obj.session
        page = (session.last_seq - obj.seq) // selectors.TRANSCRIPT_PAGE_SIZE + 1
        url = reverse("admin:conversations_chatsession_change", args=[session.pk])
        return format_html(
            '<a href="{}?transcript_page={}#msg-{}">{}</a>', url, page, obj.seq, str(session)
        )

    @admin.display(description="content")
    def excerpt(self, obj: Message) -> str:
        text = " ".join(obj.content.split())
        return text if len(text) <= 120 else text[:119] + "…"

    @admin.display(description="content")
    def content_display(self, obj: Message) -> str:
        return _pre(obj.content)

    @admin.display(description="tool calls")
    def tool_calls_display(self, obj: Message) -> str:
        return _pre(_pretty_json(obj.tool_calls)) if obj.tool_calls else "-"

    @admin.display(description="metadata")
    def metadata_display(self, obj: Message) -> str:
        return _pre(_pretty_json(obj.metadata)) if obj.metadata else "-"

    @admin.display(description="context")
    def context_display(self, obj: Message) -> str:
        return _pre(_pretty_json(obj.context)) if obj.context else "-"

    @admin.display(description="earlier versions")
    def versions_display(self, obj: Message) -> str:
        if obj.versions <= 1:
            return "-"
        earlier = selectors.list_message_versions(message=obj, limit=obj.versions).items[:-1]
        return format_html(
            "regenerated {} time{}{}",
            obj.versions - 1,
            "s" if obj.versions > 2 else "",
            format_html_join(
                "",
                "<h4>version {} · {} · {}</h4>{}",
                (
                    (v.number, v.answer.created_at, v.answer.model or "-", _pre(v.answer.content))
                    for v in earlier
                ),
            ),
        )
