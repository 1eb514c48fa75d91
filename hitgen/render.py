"""Render HIT pages from the jinja2 templates, for each target, and check them against its rules.

Targets (docs/platforms.md §1.4, §2.3, §2.4):

* **MTurk HTMLQuestion**: a complete HTML document with a plain ``<form method="post">`` whose action
  is ``turkSubmitTo + '/mturk/externalSubmit'`` (read from the page URL, so one page serves sandbox and
  production), a hidden ``assignmentId``, submit disabled in preview and until an answer is chosen.
  Wrapped by :func:`html_question` in the 2011-11-11 schema, at most 65,535 bytes, no ``]]>``.
* **Turkle** and the **requester website**: a fragment without ``<form>``, with ``${item_id}``,
  ``${image_top}``, ``${image_bottom}`` placeholders the server replaces with CSV values, raw.

The environment autoescapes and uses ``StrictUndefined``; texts and URLs are passed as *values*,
never rendered as templates. Default templates come from the installed ``cage_eval_templates``
package; a ``templates_dir`` is searched first, so a user can override one template and keep the rest.
The template context holds only the opaque item id, the two image URLs and the texts: roles, pair
ids and source names are never in reach of a template.
"""

from __future__ import annotations

import functools
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import jinja2

from cage_eval.errors import ConfigError
from hitgen.items import HitItem
from hitgen.texts import HitTexts

TEMPLATE_PACKAGE = "cage_eval_templates"
MTURK_TEMPLATE = "mturk.html.jinja"
TURKLE_TEMPLATE = "turkle.html.jinja"
BATCH_TEMPLATE = "batch.html.jinja"

#: MTurk's limit on the Question parameter, "including whitespace" (service-2.json).
MAX_QUESTION_BYTES = 65_535
HTML_QUESTION_XMLNS = (
    "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/HTMLQuestion.xsd"
)
PREVIEW_ASSIGNMENT_ID = "ASSIGNMENT_ID_NOT_AVAILABLE"
#: The fields a worker's answer arrives with (besides MTurk's assignmentId).
FORM_FIELDS = ("choice", "item_id", "elapsed_ms")
#: Placeholders of the fragment targets, filled from the input CSV's columns of the same names.
PLACEHOLDER_FIELDS = ("item_id", "image_top", "image_bottom")
#: Displayed image side in CSS pixels (small source images are scaled up to this).
DEFAULT_IMAGE_PX = 224


@functools.lru_cache(maxsize=8)
def _environment(templates_dir: str | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if templates_dir is not None:
        loaders.append(jinja2.FileSystemLoader(templates_dir))
    loaders.append(jinja2.PackageLoader(TEMPLATE_PACKAGE, "."))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def template_environment(templates_dir: Path | None = None) -> jinja2.Environment:
    """The jinja2 environment: ``templates_dir`` first (if given), then the packaged defaults."""
    if templates_dir is None:
        return _environment(None)
    path = Path(templates_dir)
    if not path.is_dir():
        raise ConfigError(f"templates directory {path} does not exist; pass an existing --templates "
                          "DIR, or leave it out to use the built-in templates")
    return _environment(str(path.resolve()))


def template_digest(templates_dir: Path | None = None) -> str:
    """A short sha256 of every template in effect (overrides included): record it beside results
    so that answers can be traced to the exact page workers saw."""
    env = template_environment(templates_dir)
    digest = hashlib.sha256()
    for name in sorted(n for n in env.list_templates() if n.endswith(".jinja")):
        source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
        digest.update(name.encode() + b"\0" + source.encode("utf-8") + b"\0")
    return digest.hexdigest()[:12]


def _render(name: str, templates_dir: Path | None, **context: object) -> str:
    env = template_environment(templates_dir)
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(f"template {exc.name!r} not found in {templates_dir or TEMPLATE_PACKAGE}; "
                          "reinstall cage-eval or add it to --templates") from None
    except jinja2.UndefinedError as exc:
        where = f"{templates_dir}/{name}" if templates_dir else name
        raise ConfigError(f"template {where}: {exc.message}; the context offers "
                          f"{', '.join(sorted(context))}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template {exc.filename or name}, line {exc.lineno}: {exc.message}") from None


def _context(texts: HitTexts, item_id: str, top_url: str, bottom_url: str, image_px: int) -> dict:
    return {
        "title": texts.title,
        "question": texts.question,
        "instructions": texts.instructions,
        "item_id": item_id,
        "image_px": int(image_px),
        "options": [
            {"value": "top", "url": top_url, "label": texts.top_label},
            {"value": "bottom", "url": bottom_url, "label": texts.bottom_label},
        ],
    }


def render_mturk_page(
    item: HitItem,
    top_url: str,
    bottom_url: str,
    texts: HitTexts,
    *,
    templates_dir: Path | None = None,
    image_px: int = DEFAULT_IMAGE_PX,
) -> str:
    """The complete HTML document of one HIT for an MTurk HTMLQuestion; checked with
    :func:`check_mturk_page`. Only ``item.item_id`` reaches the template."""
    page = _render(MTURK_TEMPLATE, templates_dir,
                   **_context(texts, item.item_id, top_url, bottom_url, image_px))
    check_mturk_page(page, where=str(Path(templates_dir or TEMPLATE_PACKAGE) / MTURK_TEMPLATE))
    return page


def render_turkle_template(
    texts: HitTexts, *, templates_dir: Path | None = None, image_px: int = DEFAULT_IMAGE_PX
) -> str:
    """The Turkle template: a fragment (no ``<form>``) with ``${item_id}``, ``${image_top}`` and
    ``${image_bottom}`` placeholders; checked with :func:`check_fragment`."""
    page = _render(TURKLE_TEMPLATE, templates_dir,
                   **_context(texts, "${item_id}", "${image_top}", "${image_bottom}", image_px))
    check_fragment(page, where=str(Path(templates_dir or TEMPLATE_PACKAGE) / TURKLE_TEMPLATE))
    return page


def render_batch_template(
    texts: HitTexts, *, templates_dir: Path | None = None, image_px: int = DEFAULT_IMAGE_PX
) -> str:
    """The requester-website batch template (MTurk "Design layout"): a fragment like Turkle's,
    filled from the input CSV's ``item_id``, ``image_top`` and ``image_bottom`` columns."""
    page = _render(BATCH_TEMPLATE, templates_dir,
                   **_context(texts, "${item_id}", "${image_top}", "${image_bottom}", image_px))
    check_fragment(page, where=str(Path(templates_dir or TEMPLATE_PACKAGE) / BATCH_TEMPLATE))
    return page


def html_question(page_html: str, *, frame_height: int = 0, check_size: bool = True) -> str:
    """Wrap a page in an HTMLQuestion (2011-11-11 schema) with the page in a CDATA section.

    Raises ConfigError when the page contains ``]]>`` (it would end the CDATA section) or the
    question exceeds 65,535 bytes (MTurk's limit, whitespace included).
    """
    if "]]>" in page_html:
        raise ConfigError("the HIT page contains ']]>', which would end the HTMLQuestion's CDATA "
                          "section; remove it from the template or texts")
    if frame_height < 0:
        raise ConfigError(f"frame height {frame_height} must be >= 0 (0 lets MTurk size the frame)")
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<HTMLQuestion xmlns="{HTML_QUESTION_XMLNS}">\n'
        f"<HTMLContent><![CDATA[{page_html}]]></HTMLContent>\n"
        f"<FrameHeight>{int(frame_height)}</FrameHeight>\n"
        "</HTMLQuestion>\n"
    )
    size = len(xml.encode("utf-8"))
    if check_size and size > MAX_QUESTION_BYTES:
        raise ConfigError(
            f"the HIT question is {size:,} bytes, over MTurk's limit of {MAX_QUESTION_BYTES:,}; the "
            "images are probably inlined as data URIs: host them on S3 instead (--s3-bucket)"
        )
    return xml


def question_bytes(page_html: str, *, frame_height: int = 0) -> int:
    """Bytes of the HTMLQuestion :func:`html_question` makes of ``page_html``, over the limit or
    not (the HIT preview reports the size; publishing with inlined images refuses it)."""
    return len(html_question(page_html, frame_height=frame_height,
                             check_size=False).encode("utf-8"))


# --------------------------------------------------------------------------- template checks


class _Inventory(HTMLParser):
    """Counts the tags and named inputs of a page (enough to check a target's rules)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: dict[str, int] = {}
        self.inputs: dict[str, list[dict[str, str | None]]] = {}
        self.forms: list[dict[str, str | None]] = []
        self.submits: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        a = dict(attrs)
        if tag == "form":
            self.forms.append(a)
        if tag in ("input", "select", "textarea") and a.get("name"):
            self.inputs.setdefault(str(a["name"]), []).append(a)
        if (tag == "input" and a.get("type") == "submit") or (
                tag == "button" and (a.get("type") or "submit") == "submit"):
            self.submits.append(a)


def _inventory(html: str) -> _Inventory:
    parser = _Inventory()
    parser.feed(html)
    parser.close()
    return parser


def _common_fields(inv: _Inventory, where: str) -> None:
    choices = inv.inputs.get("choice", [])
    values = sorted(str(c.get("value")) for c in choices if c.get("type") == "radio")
    if values != ["bottom", "top"]:
        raise ConfigError(f"template {where}: needs radio inputs named 'choice' with values 'top' and "
                          f"'bottom' (found {values})")
    if not all("required" in c for c in choices):
        raise ConfigError(f"template {where}: the 'choice' inputs must be required")
    for name in ("item_id", "elapsed_ms"):
        if name not in inv.inputs:
            raise ConfigError(f"template {where}: needs an input named {name!r}")
    if inv.tags.get("img", 0) != 2:
        raise ConfigError(f"template {where}: needs exactly two <img> (found {inv.tags.get('img', 0)})")


def check_mturk_page(html: str, *, where: str = MTURK_TEMPLATE) -> None:
    """Check an MTurk HIT page: a complete document, one post form, hidden ``assignmentId``, a
    disabled submit button, the answer fields. Raises ConfigError naming what is missing."""
    if not html.lstrip().lower().startswith("<!doctype html"):
        raise ConfigError(f"template {where}: an HTMLQuestion needs a complete document "
                          "starting with <!DOCTYPE html>")
    inv = _inventory(html)
    if len(inv.forms) != 1 or (inv.forms[0].get("method") or "").lower() != "post":
        raise ConfigError(f"template {where}: needs exactly one <form method=\"post\"> "
                          f"(found {len(inv.forms)} form(s))")
    hidden = inv.inputs.get("assignmentId", [])
    if len(hidden) != 1 or hidden[0].get("type") != "hidden":
        raise ConfigError(f"template {where}: needs one hidden input named 'assignmentId'")
    if not inv.submits or not all("disabled" in a for a in inv.submits):
        raise ConfigError(f"template {where}: needs a submit button that starts disabled "
                          "(enabled by the page script once the HIT is accepted and answered)")
    if "turkSubmitTo" not in html or "/mturk/externalSubmit" not in html:
        raise ConfigError(f"template {where}: the form action must be turkSubmitTo + "
                          "'/mturk/externalSubmit', read from the page URL")
    if PREVIEW_ASSIGNMENT_ID not in html:
        raise ConfigError(f"template {where}: must disable submit when assignmentId is "
                          f"{PREVIEW_ASSIGNMENT_ID} (preview)")
    _common_fields(inv, where)


def check_fragment(html: str, *, where: str = TURKLE_TEMPLATE) -> None:
    """Check a Turkle / requester-website fragment: no ``<form>`` (the server adds it), at least one
    input, the answer fields, and every ``${...}`` placeholder the input CSV fills."""
    inv = _inventory(html)
    if inv.forms or "<form" in html.lower():
        raise ConfigError(f"template {where}: must not contain a <form>; Turkle and MTurk's "
                          "requester website wrap the template in their own form")
    if not inv.inputs:
        raise ConfigError(f"template {where}: needs at least one named input")
    for field in PLACEHOLDER_FIELDS:
        if "${" + field + "}" not in html:
            raise ConfigError(f"template {where}: needs the placeholder ${{{field}}}")
    _check_placeholders(html, where)
    _common_fields(inv, where)


_PLACEHOLDER = re.compile(r"\$\{([^}]{0,40})\}?")


def _check_placeholders(html: str, where: str) -> None:
    """Refuse any ``${...}`` but the three the input CSV fills: the server would substitute (or
    choke on) it, and it can only come from a texts file or a template override."""
    unknown = sorted({m.group(0) for m in _PLACEHOLDER.finditer(html)
                      if m.group(1) not in PLACEHOLDER_FIELDS or not m.group(0).endswith("}")})
    if unknown:
        shown = ", ".join(repr(u[:44]) for u in unknown[:3])
        raise ConfigError(f"template {where}: unknown placeholder(s) {shown}; the input CSV "
                          f"fills only {', '.join('${' + f + '}' for f in PLACEHOLDER_FIELDS)}, "
                          "so the texts and templates must not contain any other '${'")
