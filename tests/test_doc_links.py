"""Every link and image in README.md and docs/**/*.md resolves inside the repository.

The rule: nothing in the README or docs points outside the repository. A link is a Markdown
inline link or image `[text](target)` / `![alt](target)`, a reference definition
`[label]: target`, an autolink `<scheme:...>`, or an HTML `href=` / `src=` attribute; code
spans and fenced code blocks are text, not links. A target with a URL scheme (http, https,
file, mailto, ...), one that starts with `/` or `//`, or a relative path that leaves the
repository (`../shared/...`) is outside; a relative path must name an existing file or folder,
and an anchor into a Markdown file must name one of its headings.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]*)>")
HTML_ATTR = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def doc_files(root: Path = REPO) -> list[Path]:
    files = [root / "README.md"] + sorted((root / "docs").rglob("*.md"))
    return [f for f in files if f.is_file()]


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link in a Markdown text, outside code."""
    found, in_fence = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        line = CODE_SPAN.sub("", line)
        targets = [m.group(1) for m in INLINE.finditer(line)]
        targets += [m.group(1) for m in AUTOLINK.finditer(line)]
        targets += [m.group(1) for m in HTML_ATTR.finditer(line)]
        ref = REFERENCE.match(line)
        if ref:
            targets.append(ref.group(1))
        found += [(number, t) for t in targets]
    return found


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown text (lower case, punctuation dropped,
    spaces to hyphens, repeats numbered)."""
    anchors, seen, in_fence = set(), {}, False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        m = None if in_fence else HEADING.match(line)
        if not m:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))        # link text only
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def problem(source: Path, target: str, root: Path = REPO) -> str | None:
    """Why `target`, linked from `source`, is not a link inside `root`; None if it is."""
    if not target:
        return "empty link target"
    if SCHEME.match(target) or target.startswith("/"):
        return "points outside the repository"
    path_part, _, anchor = target.partition("#")
    if not path_part:                                    # an anchor in the same file
        dest = source
    else:
        dest = (source.parent / path_part).resolve()
        try:
            dest.relative_to(root.resolve())
        except ValueError:
            return "points outside the repository"
        if not dest.exists():
            return "does not exist"
    if anchor and dest.suffix == ".md" and dest.is_file():
        if anchor not in heading_anchors(dest.read_text(encoding="utf-8")):
            return f"no heading #{anchor} in {dest.relative_to(root.resolve())}"
    return None


def broken_links(root: Path = REPO) -> list[str]:
    out = []
    for f in doc_files(root):
        for number, target in links(f.read_text(encoding="utf-8")):
            why = problem(f.resolve(), target, root)
            if why:
                out.append(f"{f.relative_to(root)}:{number}: {target}: {why}")
    return out


def test_readme_and_docs_links_resolve_inside_the_repository():
    assert doc_files(), "no README.md or docs/*.md found"
    bad = broken_links()
    assert not bad, "links in README/docs that do not resolve inside the repository:\n" + "\n".join(bad)


def test_readme_stays_a_front_door():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 220, f"README.md has {lines} lines; move details into docs/ (about 200 at most)"


# -- the checker itself -----------------------------------------------------------------------

@pytest.fixture
def repo(tmp_path):
    (tmp_path / "docs" / "img").mkdir(parents=True)
    (tmp_path / "docs" / "img" / "a.png").write_bytes(b"png")
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Step 1. Weights (once)\n\n## Tests\n## Tests\n")
    return tmp_path


def check(repo: Path, text: str) -> list[str]:
    (repo / "README.md").write_text(text)
    return broken_links(repo)


def test_checker_accepts_links_inside(repo):
    assert check(repo, "[g](docs/guide.md) ![i](docs/img/a.png) [d](docs/) "
                       "[s](docs/guide.md#step-1-weights-once) [t](docs/guide.md#tests-1) [h](#x)\n"
                       "# x\n") == []


@pytest.mark.parametrize("target,why", [
    ("docs/missing.md", "does not exist"),
    ("../shared/SPEC-quant.md", "points outside"),
    ("https://example.org/page", "points outside"),
    ("http://127.0.0.1:8000/", "points outside"),
    ("/etc/passwd", "points outside"),
    ("docs/guide.md#no-such-heading", "no heading"),
    ("docs/../../elsewhere.md", "points outside"),
])
def test_checker_refuses(repo, target, why):
    bad = check(repo, f"see [this]({target}) here\n")
    assert len(bad) == 1 and why in bad[0] and bad[0].startswith("README.md:1:"), bad


def test_checker_reads_images_references_autolinks_and_html(repo):
    text = ("![pic](docs/img/b.png)\n[ref]: docs/nothere.md\n<https://example.org>\n"
            '<img src="docs/img/c.png">\n')
    assert [b.split(":")[1] for b in check(repo, text)] == ["1", "2", "3", "4"]


def test_checker_skips_code(repo):
    text = "```bash\ncat [x](../shared/a.md)\n```\nrun `[y](../shared/b.md)` here\n"
    assert check(repo, text) == []
