"""The docs stay true to the code: every setting is documented with its type and default,
every message quoted in the troubleshooting guide is the code's own text, every Prefect
setting named is one Prefect has, and every relative link points at a file.

Fast on purpose: it reads source files and Prefect's package files, and imports neither
Prefect nor any media library.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import types
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import pytest
import yaml  # type: ignore[import-untyped]
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from recorder.settings import RecorderSettings
from recorder.storage.credentials import ENV_SECRET_ID, ENV_SECRET_KEY, ENV_SESSION_TOKEN

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
TROUBLESHOOTING = DOCS / "troubleshooting.md"
SOURCE_DIRS = ("recorder", "tasks", "flows", "deployments")
ENV_PREFIX = "RECORDER_"
# How a troubleshooting entry marks the paragraph whose code spans are quoted messages.
SYMPTOM = "**Symptom:**"  # the project's own text
PREFECT_SYMPTOM = "**Symptom (Prefect):**"  # text of the installed Prefect
VARIABLE_PART = "…"
# How a part still being built was marked: "(pending)" in the text, or a `<!-- pending -->` comment.
PENDING_MARK = re.compile(r"\(pending\)|<!--\s*pending", re.IGNORECASE)
# Stands for an f-string's replacement field in a source template: no quote contains it.
FIELD_MARK = "\x00"

TABLE_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \| (.*?) \| (.*?) \| (.*) \|$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.MULTILINE)
PREFECT_NAME = re.compile(r"\bPREFECT_[A-Z0-9_]*[A-Z0-9]")

TYPE_NAMES: dict[Any, str] = {
    Path: "path",
    str: "string",
    SecretStr: "secret",
    int: "integer",
    float: "number",
    bool: "true or false",
}
BOUND_SIGNS = {
    annotated_types.Ge: "≥",
    annotated_types.Gt: ">",
    annotated_types.Le: "≤",
    annotated_types.Lt: "<",
}


# --- settings ------------------------------------------------------------------------------


def render_default(value: object) -> str:
    """A default as configuration.md's tables write it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def render_type(field: FieldInfo) -> str:
    """A setting's type as configuration.md's tables write it, bounds included."""
    annotation = field.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    rendered = TYPE_NAMES[annotation]
    bounds = [
        f"{BOUND_SIGNS[type(rule)]} {getattr(rule, type(rule).__name__.lower()):g}"
        for rule in field.metadata
        if type(rule) in BOUND_SIGNS
    ]
    return f"{rendered} {', '.join(bounds)}" if bounds else rendered


def documented_rows() -> dict[str, tuple[str, str, str]]:
    """configuration.md's rows: variable -> (type, default, what it does)."""
    rows: dict[str, tuple[str, str, str]] = {}
    for line in CONFIGURATION.read_text().splitlines():
        match = TABLE_ROW.match(line)
        if match:
            name, kind, default, meaning = match.groups()
            assert name not in rows, f"{name} is documented twice"
            rows[name] = (kind, default, meaning)
    return rows


@pytest.mark.parametrize("name", list(RecorderSettings.model_fields))
def test_every_setting_is_documented_with_its_type_and_default(name: str) -> None:
    field = RecorderSettings.model_fields[name]
    variable = ENV_PREFIX + name.upper()
    rows = documented_rows()
    assert variable in rows, f"{variable} is not in {CONFIGURATION.name}"
    kind, default, _ = rows[variable]
    assert default == render_default(field.default), variable
    assert kind == render_type(field), variable


def test_every_documented_setting_exists() -> None:
    fields = {ENV_PREFIX + name.upper() for name in RecorderSettings.model_fields}
    unknown = [name for name in documented_rows() if name.startswith(ENV_PREFIX) and name not in fields]
    assert unknown == []


def test_no_doc_is_marked_pending() -> None:
    """Every feature the docs describe is in the code: none is marked as still being built."""
    marked = [p.name for p in MARKDOWN_FILES if PENDING_MARK.search(p.read_text())]
    assert marked == []


def test_the_variables_read_outside_the_settings_are_documented() -> None:
    rows = documented_rows()
    assert "CFS_PATH" in rows
    text = CONFIGURATION.read_text()
    for name in (ENV_SECRET_ID, ENV_SECRET_KEY, ENV_SESSION_TOKEN):
        assert f"| `{name}` |" in text, name


def test_render_writes_the_forms_the_tables_use() -> None:
    """The renderers themselves, on fields whose documented form is known."""
    fields = RecorderSettings.model_fields
    assert render_type(fields["trtc_audio_kbps"]) == "integer ≥ 8, ≤ 500"
    assert render_type(fields["room_backend"]) == "one of `sim`, `rtmp`, `trtc`"
    assert render_type(fields["rtmp_stream_secret"]) == "secret"
    assert render_default(fields["work_dir"].default) == "`work`"
    assert render_default(fields["live_finish"].default) == "`true`"
    assert render_default(fields["segment_seconds"].default) == "`6.0`"


# --- quoted messages -----------------------------------------------------------------------


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants: they describe messages, they do not make them."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def string_templates(path: Path) -> Iterator[str]:
    """Every string the file's code can make: literals as they are, f-strings with
    FIELD_MARK for each replacement field (adjacent literals are already joined)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
            yield node.value
        elif isinstance(node, ast.JoinedStr):
            yield "".join(
                str(part.value) if isinstance(part, ast.Constant) else FIELD_MARK for part in node.values
            )


@cache
def project_templates() -> tuple[str, ...]:
    files = sorted(p for folder in SOURCE_DIRS for p in (ROOT / folder).rglob("*.py"))
    return tuple(t for path in files for t in string_templates(path))


@cache
def prefect_root() -> Path:
    spec = importlib.util.find_spec("prefect")  # finds the package without importing it
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent


def prefect_templates(quote: str) -> list[str]:
    """Prefect's strings, from the files that hold the quote's longest word."""
    word = max(re.findall(r"[A-Za-z]{4,}", quote), key=len)
    return [
        template
        for path in sorted(prefect_root().rglob("*.py"))
        if word in path.read_text(errors="replace")
        for template in string_templates(path)
    ]


def quote_pattern(quote: str) -> re.Pattern[str]:
    """The quote's text, each VARIABLE_PART matching whatever the code puts there."""
    pieces = quote.split(VARIABLE_PART)
    literal = "".join(pieces).strip()
    assert len(literal) >= 4, f"{quote!r} says too little to be looked for"
    return re.compile(".*?".join(re.escape(piece) for piece in pieces), re.DOTALL)


def quoted_messages(kind: str) -> list[str]:
    """Code spans of the troubleshooting paragraphs that start with `kind`."""
    text = FENCE.sub("", TROUBLESHOOTING.read_text())
    quotes: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        if flat.startswith(kind):
            quotes += [match.group(2).strip() for match in CODE_SPAN.finditer(flat)]
    return quotes


def test_the_guide_quotes_messages_in_each_kind_of_symptom() -> None:
    assert len(quoted_messages(SYMPTOM)) >= 20
    assert quoted_messages(PREFECT_SYMPTOM)


@pytest.mark.parametrize("quote", quoted_messages(SYMPTOM))
def test_a_quoted_message_is_the_codes_own_text(quote: str) -> None:
    pattern = quote_pattern(quote)
    assert any(pattern.search(template) for template in project_templates()), (
        f"{quote!r} is not made anywhere in {', '.join(SOURCE_DIRS)}"
    )


@pytest.mark.parametrize("quote", quoted_messages(PREFECT_SYMPTOM))
def test_a_quoted_prefect_message_is_prefects_own_text(quote: str) -> None:
    pattern = quote_pattern(quote)
    assert any(pattern.search(template) for template in prefect_templates(quote)), (
        f"{quote!r} is not made anywhere in the installed Prefect"
    )


def test_the_matcher_tells_a_message_from_a_misquote() -> None:
    templates = ["write to " + FIELD_MARK + " failed: " + FIELD_MARK + FIELD_MARK]
    assert quote_pattern("write to … failed: …").search(templates[0])
    assert not quote_pattern("write to COS failed: …").search(templates[0])
    assert not quote_pattern("written to … failed").search(templates[0])


# --- Prefect settings ----------------------------------------------------------------------


@cache
def prefect_setting_names() -> frozenset[str]:
    """PREFECT_* variables of Prefect's settings models: each model's env prefix (from its
    build_settings_config path) plus its field names, and the aliases its fields accept."""
    names: set[str] = set()
    for path in (prefect_root() / "settings" / "models").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            alias = node.value if isinstance(node, ast.Constant) else None
            if isinstance(alias, str) and re.fullmatch(r"prefect_[a-z0-9_]+", alias):
                names.add(alias.upper())
            if not isinstance(node, ast.ClassDef):
                continue
            prefix = None
            for item in node.body:
                value = getattr(item, "value", None)
                if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "build_settings_config":
                    path_parts = [c.value for c in ast.walk(value) if isinstance(c, ast.Constant)]
                    prefix = "PREFECT_" + "".join(f"{p}_" for p in path_parts if isinstance(p, str))
            if prefix is None:
                continue
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add((prefix + item.target.id).upper())
    return frozenset(names)


@cache
def prefect_logging_names() -> frozenset[str]:
    """The variables that override a key of Prefect's logging.yml, named as Prefect names them
    (prefect/logging/configuration.py: PREFECT_LOGGING_ + the key's path)."""
    config = yaml.safe_load((prefect_root() / "logging" / "logging.yml").read_text())

    def paths(node: object, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from paths(value, (*path, str(key)))
        else:
            yield path

    return frozenset(
        re.sub(r"[^0-9a-zA-Z]+", "_", "PREFECT_LOGGING_" + "_".join(p)).upper() for p in paths(config, ())
    )


def test_the_json_log_switch_names_a_handler_and_formatter_prefect_has() -> None:
    config = yaml.safe_load((prefect_root() / "logging" / "logging.yml").read_text())
    assert "formatter" in config["handlers"]["console"]
    assert "json" in config["formatters"]
    assert "| `PREFECT_LOGGING_HANDLERS_CONSOLE_FORMATTER` |" in CONFIGURATION.read_text()


@pytest.mark.parametrize("doc", ["configuration.md", "deploying.md", "troubleshooting.md", "architecture.md"])
def test_every_prefect_setting_named_is_one_prefect_has(doc: str) -> None:
    named = set(PREFECT_NAME.findall((DOCS / doc).read_text()))
    known = prefect_setting_names() | prefect_logging_names()
    assert "PREFECT_API_URL" in known and "PREFECT_LOCAL_STORAGE_PATH" in known  # the reader works
    assert sorted(named - known) == []


# --- links ---------------------------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"`|\*\*", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors_of(markdown: Path) -> set[str]:
    return {github_anchor(h) for h in HEADING.findall(FENCE.sub("", markdown.read_text()))}


def links_of(markdown: Path) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", markdown.read_text()))
    return LINK.findall(text)


MARKDOWN_FILES = [ROOT / "README.md", ROOT / "deployments" / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("markdown", MARKDOWN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file(markdown: Path) -> None:
    broken = []
    for target in links_of(markdown):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # a URL (https:, mailto:)
        path_part, _, anchor = target.partition("#")
        linked = (markdown.parent / path_part).resolve() if path_part else markdown
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors_of(linked)):
            broken.append(target)
    assert broken == []


def test_the_link_checker_sees_links_and_anchors() -> None:
    assert "docs/reliability.md" in links_of(ROOT / "README.md")
    assert "known-limits" in anchors_of(DOCS / "reliability.md")
    assert github_anchor("Prefect server on PostgreSQL") == "prefect-server-on-postgresql"
