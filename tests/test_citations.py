"""Every citation in the repository names a file in the repository; nothing cites notes kept outside it.

The files checked are those git knows: tracked files plus untracked ones that are not ignored (so
a new file is checked before it is committed), minus files deleted from the work tree. A cited path
"exists" when it is one of those files or a folder holding one of them (an ignored file, e.g. under
``runs/`` or ``.venv/``, does not count).

(a) Markdown links. In every ``*.md`` file, outside fenced code blocks, the target of an inline link
    ``[text](target)`` / image ``![alt](target)`` or of a reference definition ``[label]: target``
    must exist, resolved against the Markdown file's folder (a leading ``/``: the repository root).
    ``http(s)://`` and ``mailto:`` targets are not checked. An anchor (``file.md#section`` or a bare
    ``#section``) must be the GitHub slug of one of that file's headings.

(b) Repository paths in prose: Python comments and docstrings (module, class, function), the ``#``
    comments of YAML, TOML, shell, Dockerfile and Makefile files, and the whole text of Markdown files
    (code blocks included). A token that starts with a top-level source folder (``vlora/``,
    ``pipelines/``, ``flows/``, ``infra/``, ``docker/``, ``tests/``, ``benchmarks/``, ``docs/``,
    ``scripts/``, ``requirements/``) is read up to the first character outside ``[A-Za-z0-9_./-]``,
    trailing ``. , :`` trimmed. It names a file when its last part has an extension
    (``vlora/eval/tsv.py``) and a folder when it ends with ``/`` (``infra/kuberay/``) or has two or
    more ``/`` (``tests/vlora/eval``); either must exist. Not checked, because they are not one path:

    * a token with one ``/``, no extension and no trailing ``/``: a name, not a path (the Prefect
      deployment ``vlora/full-pipeline``, the Ray label ``vlora/node``, BuildKit's
      ``docker/dockerfile``); write ``infra/kuberay/`` to have a folder checked;

    * tokens followed by a glob or placeholder character (``*``, ``?``, ``<``, ``{``, ``[``, ``$``,
      ``…``), e.g. ``pipelines/run_configs/*.yaml``, ``docs/<topic>.md``, ``benchmarks/fault_drills*``;
    * tokens preceded by a word character or one of ``/ . ~ - $ :`` (inside another path or a URL:
      ``/tmp/x/docs/a.md``, ``s3://b/tests/``, ``~/.cache/vlora``, ``$PWD/tests``).

    Outputs are not special: ``benchmarks/results/`` is committed, so a cited result file must be a
    committed one; run outputs live under ``runs/`` (ignored), which is not a source folder and is
    not checked.

(c) Notes outside the repository. No file (``*.lock*`` files excepted) cites a note that is not
    in the repository or an issue number; the facts belong in ``docs/`` in our own words, and a
    thing is named by what it is. The rules name no particular note, so they also catch new ones:

    * an upper-case note file (``NOTES.md``, ``TEAM_GUIDE.txt``) whose file name is no file of
      the repository (``README.md`` is one);
    * an upper-case note name with a notes suffix, with or without extension (``METHOD_SPEC``,
      ``X_NOTES``, ``X_GUIDE``);
    * a relative path (``../outside/x``) that, read from the citing file's folder, leaves the
      repository, and an absolute path into the machine's ``/work/`` tree (outside the JSON
      results, which record where they were measured);
    * a ``reference/...`` folder (kept beside projects, not in this one);
    * an issue number ("issue 7", "Item 5 of issue 7"). References to upstream trackers
      (``VLMEvalKit #677``) are fine.

(d) Cited sections. A citation of a Markdown file followed by a quoted section name
    (``docs/benchmark-scoring.md, 'CircularEval'``, ``README "Offline and telemetry"``) must name one
    of that file's headings (case-insensitive; a heading that starts with the quoted text counts).
    ``README`` alone is the top-level README.md; a bare ``x.md`` is looked up beside the citing file,
    then at the root. Checked in every text file.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parent.parent
THIS_FILE = PurePosixPath(Path(__file__).resolve().relative_to(ROOT).as_posix())

# (c) exceptions, each with the change that removes it (none left; an entry that is no longer
# needed fails the test, so the table cannot go stale).
OUTSIDE_NOTES_EXCEPTIONS: dict[str, str] = {}

SOURCE_FOLDERS = (
    "vlora",
    "pipelines",
    "flows",
    "infra",
    "docker",
    "tests",
    "benchmarks",
    "docs",
    "scripts",
    "requirements",
)
PATH_TOKEN_RE = re.compile(
    r"(?<![\w/.~$:-])(?:" + "|".join(SOURCE_FOLDERS) + r")/[A-Za-z0-9_./-]*(?P<next>.?)"
)
NOT_ONE_PATH = set("*?<{[$…")
# (c): matches here are checked further by `outside_citations` (does the name exist here?)
NOTE_FILE_RE = re.compile(r"(?<![\w/.-])[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*\.(?:md|txt)\b")
MACHINE_PATH_RE = re.compile(r"(?<![\w.])/work/\w")
LEAVING_PATH_RE = re.compile(r"(?<![\w.])(?:\.\./)+[\w.-]+")
OUTSIDE_NOTES_RE = re.compile(
    r"\b[A-Z][A-Z0-9]*_(?:SPEC|NOTES|GUIDE)\b"
    r"|(?<![\w/.-])reference/[A-Za-z]"
    r"|\b[Ii]ssues? (?:no\.? ?)?\d+"
)
MD_INLINE_LINK_RE = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
MD_REFERENCE_DEF_RE = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s+<?(\S+?)>?(?:\s|$)", re.MULTILINE)
SECTION_CITATION_RE = re.compile(
    r"(?<![\w/.-])(?P<file>(?:[\w-]+/)*[\w.-]+\.md|README)[,:]?\s+(?:section\s+)?"
    r"(?:'(?P<s1>[^'\n]{2,100})'|\"(?P<s2>[^\"\n]{2,100})\"|“(?P<s3>[^”\n]{2,100})”)"
)
COMMENT_SUFFIXES = {".yaml", ".yml", ".toml", ".sh", ".cfg", ".ini"}
COMMENT_NAMES_RE = re.compile(r"^(Dockerfile.*|Makefile|.*\.mk|run)$")
HASH_COMMENT_RE = re.compile(r"(?:^|\s)#(.*)$")
FENCE_RE = re.compile(r"^\s*(```|~~~)")
HEADING_RE = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")


@cache
def repo_files() -> frozenset[PurePosixPath]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"not a git checkout ({error}): the citation check needs `git ls-files`")
    names = [name for name in listed.decode().split("\0") if name]
    return frozenset(PurePosixPath(name) for name in names if (ROOT / name).is_file())


@cache
def repo_folders() -> frozenset[PurePosixPath]:
    return frozenset(parent for path in repo_files() for parent in path.parents)


def exists(path: PurePosixPath) -> bool:
    return path in repo_files() or path in repo_folders()


def normalise(path: PurePosixPath) -> PurePosixPath | None:
    """``a/./b/../c`` → ``a/c``; None when it climbs out of the repository."""
    parts: list[str] = []
    for part in path.parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


@cache
def text_of(path: PurePosixPath) -> str | None:
    try:
        return (ROOT / path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def text_files() -> list[PurePosixPath]:
    return sorted(path for path in repo_files() if text_of(path) is not None)


def markdown_files() -> list[PurePosixPath]:
    return [path for path in text_files() if path.suffix == ".md"]


def outside_fences(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of the lines that are not inside a fenced code block."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE_RE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def github_slug(heading: str) -> str:
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def headings(path: PurePosixPath) -> tuple[str, ...]:
    return tuple(
        match.group(1)
        for _, line in outside_fences(text_of(path) or "")
        if (match := HEADING_RE.match(line))
    )


@cache
def anchors(path: PurePosixPath) -> frozenset[str]:
    seen: dict[str, int] = {}
    slugs = set()
    for heading in headings(path):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        slugs.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return frozenset(slugs)


def python_prose(source: str) -> Iterator[tuple[int, str]]:
    """Comments and docstrings of a Python file, with their first line numbers."""
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        documented = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        if isinstance(node, documented) and (docstring := ast.get_docstring(node, clean=False)):
            yield node.body[0].lineno, docstring


def hash_comments(source: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(source.splitlines(), 1):
        if match := HASH_COMMENT_RE.search(line):
            yield number, match.group(1)


def prose(path: PurePosixPath) -> Iterator[tuple[int, str]]:
    """The parts of a file where rule (b) looks for paths."""
    source = text_of(path) or ""
    if path.suffix == ".py":
        yield from python_prose(source)
    elif path.suffix == ".md":
        yield from enumerate(source.splitlines(), 1)
    elif path.suffix in COMMENT_SUFFIXES or COMMENT_NAMES_RE.match(path.name):
        yield from hash_comments(source)


def cited_paths(text: str) -> Iterator[str]:
    for match in PATH_TOKEN_RE.finditer(text):
        if match.group("next") in NOT_ONE_PATH:
            continue
        token = match.group(0)[: len(match.group(0)) - len(match.group("next"))].rstrip(".,:")
        if token.endswith("/") or "." in PurePosixPath(token).name or token.count("/") >= 2:
            yield token


def test_markdown_links_point_at_existing_files_and_headings() -> None:
    broken = []
    for path in markdown_files():
        lines = "\n".join(line for _, line in outside_fences(text_of(path) or ""))
        targets = MD_INLINE_LINK_RE.findall(lines) + MD_REFERENCE_DEF_RE.findall(lines)
        for target in targets:
            if re.match(r"(?i)(https?:|mailto:)", target):
                continue
            file_part, _, anchor = target.partition("#")
            if file_part:
                base = PurePosixPath() if file_part.startswith("/") else path.parent
                linked = normalise(base / file_part.lstrip("/"))
            else:
                linked = path
            if linked is None or not exists(linked):
                broken.append(f"{path}: link {target!r}: no such file or folder")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{path}: link {target!r}: {linked} has no heading '#{anchor}'")
    assert broken == []


def test_paths_cited_in_comments_docstrings_and_docs_exist() -> None:
    missing = []
    for path in text_files():
        for number, text in prose(path):
            for cited in cited_paths(text):
                normalised = normalise(PurePosixPath(cited))
                if normalised is None or not exists(normalised):
                    missing.append(
                        f"{path}:{number}: cites {cited!r}, which is not in the repository"
                    )
    assert missing == []


@cache
def repo_file_names() -> frozenset[str]:
    return frozenset(path.name for path in repo_files())


def outside_citations(citing: PurePosixPath, line: str) -> list[str]:
    """What `line` of `citing` cites outside the repository (rule (c))."""
    hits = [match.group(0) for match in OUTSIDE_NOTES_RE.finditer(line)]
    if citing.suffix != ".json":  # committed results record the machine's paths: data, no citation
        hits += [match.group(0) for match in MACHINE_PATH_RE.finditer(line)]
    hits += [
        match.group(0)
        for match in NOTE_FILE_RE.finditer(line)
        if match.group(0) not in repo_file_names()
    ]
    for match in LEAVING_PATH_RE.finditer(line):
        depth = len(citing.parent.parts)
        if match.group(0).count("../") > depth:  # climbs above the repository root
            hits.append(match.group(0))
    return hits


def test_nothing_cites_notes_outside_the_repository_or_issue_numbers() -> None:
    found, stale_exceptions = [], []
    for path in text_files():
        if path == THIS_FILE or ".lock" in path.name:
            continue
        hits = [
            f"{path}:{number}: {hit!r}"
            for number, line in enumerate((text_of(path) or "").splitlines(), 1)
            for hit in outside_citations(path, line)
        ]
        if path.as_posix() in OUTSIDE_NOTES_EXCEPTIONS:
            if not hits:
                stale_exceptions.append(path.as_posix())
            continue
        found.extend(hits)
    assert found == []
    assert stale_exceptions == [], "no longer needed: remove from OUTSIDE_NOTES_EXCEPTIONS"


def _cited_markdown(citing: PurePosixPath, name: str) -> PurePosixPath | None:
    if name == "README":
        return PurePosixPath("README.md")
    candidates = [PurePosixPath(name)]
    if "/" not in name:
        candidates.insert(0, citing.parent / name)
    return next((candidate for candidate in candidates if candidate in repo_files()), None)


def test_cited_sections_are_headings_of_the_cited_file() -> None:
    def plain(text: str) -> str:
        return re.sub(r"[`*_]", "", text).strip().lower()

    wrong = []
    for path in text_files():
        for number, line in enumerate((text_of(path) or "").splitlines(), 1):
            for match in SECTION_CITATION_RE.finditer(line):
                section = match.group("s1") or match.group("s2") or match.group("s3")
                cited = _cited_markdown(path, match.group("file"))
                if cited is None:
                    wrong.append(f"{path}:{number}: cites {match.group('file')!r}: no such file")
                elif not any(plain(h).startswith(plain(section)) for h in headings(cited)):
                    wrong.append(f"{path}:{number}: {cited} has no section {section!r}")
    assert wrong == []


def test_the_rules_catch_what_they_are_meant_to_catch() -> None:
    """The patterns themselves, on made-up text (so a loosened pattern cannot pass silently)."""
    assert list(cited_paths("see vlora/eval/tsv.py, then docs/missing.md.")) == [
        "vlora/eval/tsv.py",
        "docs/missing.md",
    ]
    assert (
        list(
            cited_paths(
                "pipelines/run_configs/*.yaml docs/<topic>.md /tmp/docs/x.md ~/.cache/vlora"
            )
        )
        == []
    )
    assert list(cited_paths("s3://bucket/tests/a.py $PWD/tests/x")) == []
    assert list(cited_paths("prefect deployment run vlora/full-pipeline")) == []
    assert list(cited_paths("infra/kuberay/ and tests/vlora/eval")) == [
        "infra/kuberay/",
        "tests/vlora/eval",
    ]
    at_root, in_docs = PurePosixPath("x.py"), PurePosixPath("docs/x.md")
    for text in (
        "(TEAM_GUIDE.md)",
        "see METHOD_SPEC",
        "NOTES.md §7",
        "../outside/x",
        "/work/elsewhere/x",
        "reference/method",
        "issue 7",
    ):
        assert outside_citations(at_root, text), text
    for text in (
        "VLMEvalKit #677",
        "tissue 3",
        "the reference implementation",
        "README.md",
        "requirements/base.txt",
        "MERGE_MIN_NEW_TOKENS",
    ):
        assert not outside_citations(at_root, text), text
    assert not outside_citations(in_docs, "[results](../benchmarks/results/serve_load.md)")
    assert outside_citations(in_docs, "../../outside/x")
    assert github_slug("What `make run` does") == "what-make-run-does"
    assert github_slug("Cost model (paper §3.4 and its Appendix A)") == (
        "cost-model-paper-34-and-its-appendix-a"
    )
    citation = SECTION_CITATION_RE.search("docs/benchmark-scoring.md, 'CircularEval'.")
    assert citation and citation.group("file", "s1") == (
        "docs/benchmark-scoring.md",
        "CircularEval",
    )
