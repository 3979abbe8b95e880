import logging
import sys
from typing import IO

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from chatengine.exceptions import ApplicationError, NotFound
from conversations import selectors, services
from conversations.management.cli import ConversationsCommand
from conversations.models import ChatSession, Message
from llm import services as llm_services
from llm.catalog import NOT_ALLOWED, is_allowed_model

HELP_TEXT = """\
Type a message and press Enter to send it. Commands:
  /history [N]   the last N messages (default 10)
  /context       what the next reply would send: tokens used vs budget, messages dropped
  /new           start a new session (same user and model)
  /title TEXT    set this session's title
  /help          this list
  /quit          leave (also Ctrl-D or Ctrl-C)
A line starting with // is sent as a message starting with /."""


class Command(ConversationsCommand):
    help = (
        "Chat with the configured LLM provider from the terminal: starts a session for --user "
        "(or resumes --session), prints its last messages, and streams replies as they arrive. "
        "Type /help for the slash commands. When stdin is not a terminal, every line is one "
        "user message and only the replies are printed (one per line), so it can be scripted; "
        "the exit status is then 1 if any reply failed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, metavar="USERNAME", help="Who chats.")
        parser.add_argument(
            "--session", metavar="ID", help="Resume this session of the user (default: a new one)."
        )
        parser.add_argument(
            "--model",
            metavar="MODEL",
            help="Model for the replies (default: the session's model, else LLM_MODEL); a new "
            "session is created with it.",
        )
        parser.add_argument(
            "--last",
            type=int,
            default=10,
            metavar="N",
            help="Messages of history to print on start (default 10; 0 for none).",
        )

    def handle(self, *args, **options):
        if options["last"] < 0:
            raise CommandError("--last must be 0 or more.")
        self.stdin: IO[str] = sys.stdin
        self.interactive = self.stdin.isatty()
        self.model = options["model"]
        if self.model is not None and not is_allowed_model(self.model):
            raise CommandError(f"--model: {NOT_ALLOWED} (LLM_ALLOWED_MODELS)")
        self.failed = False
        if self.interactive and options["verbosity"] < 2:
            # INFO lines (message.appended, llm.request...) would interleave with the
            # conversation on the same terminal; warnings still show. -v 2 keeps them.
            logging.getLogger("chatengine").setLevel(logging.WARNING)
        user = self._user(options["user"])
        if options["session"]:
            try:
                self.session = selectors.get_session_for_user(
                    user=user, session_id=options["session"]
                )
            except NotFound:
                raise CommandError(
                    f"--session: session {options['session']} not found for user "
                    f"{options['user']!r}."
                ) from None
            self._info(f"Resumed session {self.session.pk} ({self._describe()}).")
            self._print_history(options["last"], info=True)
        else:
            self.session = services.create_session(user=user, model=self.model or "")
            self._info(f"New session {self.session.pk} ({self._describe()}).")
        if self.interactive:
            self._info("Type /help for commands, /quit to leave.")
        try:
            self._loop()
        except KeyboardInterrupt:
            self.stdout.write("")
        if self.failed and not self.interactive:
            raise CommandError("At least one reply failed (see above).")

    # --- setup ------------------------------------------------------------------------------
    @staticmethod
    def _user(username: str):
        User = get_user_model()
        try:
            return User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"--user: no user {username!r}.") from None

    def _describe(self) -> str:
        model = llm_services.resolve_model(session=self.session, model=self.model)
        return f"model {model}, {self.session.message_count} message(s)"

    # --- output -----------------------------------------------------------------------------
    def _info(self, text: str) -> None:
        """Chatter around the replies: stdout on a terminal, stderr when scripted."""
        if self.interactive:
            self.stdout.write(text, style_func=self.style.HTTP_INFO)
        else:
            self.stderr.write(text, style_func=lambda s: s)

    def _say(self, text: str) -> None:
        """Answers to slash commands: always stdout."""
        self.stdout.write(text)

    def _error(self, text: str) -> None:
        self.stderr.write(text)

    # --- loop -------------------------------------------------------------------------------
    def _read(self) -> str | None:
        if self.interactive:
            try:
                return input(self.style.SQL_FIELD("you> "))
            except EOFError:
                return None
        line = self.stdin.readline()
        return None if line == "" else line.rstrip("\r\n")

    def _loop(self) -> None:
        while (line := self._read()) is not None:
            if not line.strip():
                continue
            if line.startswith("//"):
                self._reply(line[1:])
            elif line.startswith("/"):
                if not self._command(line):
                    return
            else:
                self._reply(line)

    def _command(self, line: str) -> bool:
        """Run a slash command; False means leave."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name in ("/quit", "/exit"):
            return False
        if name == "/help":
            self._say(HELP_TEXT)
        elif name == "/history":
            if arg and not arg.isdigit():
                self._error("/history takes a number of messages, e.g. /history 20.")
            else:
                self._print_history(int(arg) if arg else 10, info=False)
        elif name == "/context":
            self._print_context()
        elif name == "/new":
            self.session = services.create_session(user=self.session.user, model=self.session.model)
            self._say(f"New session {self.session.pk} ({self._describe()}).")
        elif name == "/title":
            if not arg:
                self._error("/title needs the new title, e.g. /title Trip to Lisbon.")
            else:
                services.update_session(session=self.session, title=arg)
                self._say(f"Title set: {arg}")
        else:
            self._error(f"Unknown command {name}; /help lists them.")
        return True

    def _print_history(self, count: int, *, info: bool) -> None:
        if count == 0:
            return
        page = selectors.list_messages(session=self.session, limit=count, order="desc")
        write = self._info if info else self._say
        if not page.items:
            write("(no messages yet)")
        for message in reversed(page.items):
            write(f"[{message.seq}] {message.role}: {message.content}")

    def _print_context(self) -> None:
        self.session = ChatSession.objects.get(pk=self.session.pk)
        context = llm_services.build_context(self.session, model=self.model)
        self._say(
            f"Context: {context.tokens} of {context.budget} tokens; "
            f"{context.messages_included} message(s) included, {context.messages_dropped} "
            f"dropped; encoding {context.encoding}; "
            f"model {llm_services.resolve_model(session=self.session, model=self.model)}."
        )

    def _reply(self, content: str) -> None:
        try:
            prepared = llm_services.prepare_reply(
                session=self.session, content=content, model=self.model
            )
        except ApplicationError as exc:  # nothing stored (archived, too long for the context)
            self._failed(exc)
            return
        out = self.stdout
        if self.interactive:
            out.write(self.style.SQL_KEYWORD("assistant> "), ending="")
        streamed = False
        for event in llm_services.stream_reply(prepared):
            if isinstance(event, llm_services.Delta):
                out.write(event.text, ending="")
                out.flush()
                streamed = True
            elif isinstance(event, llm_services.Failed):
                if streamed:
                    out.write("")
                self._failed(event.error, partial=event.message)
                return
        out.write("")
        out.flush()

    def _failed(self, exc: ApplicationError, *, partial: Message | None = None) -> None:
        self.failed = True
        kept = " (the partial reply was stored)" if partial is not None else ""
        self._error(f"error: {exc.error_type}: {exc.message}{kept}")
