"""What a file is, by its name alone: code in which language, prose, and in which markup.

The data sources decide by these tables which documents a directory holds and in which domain
(`code:<language>` or text); the standard-library corpus decides the same way for its own
files. No file is opened here.
"""

from __future__ import annotations

import os
import re

TEXT_EXTENSIONS = frozenset({".txt", ".text", ".md", ".markdown", ".rst", ".adoc", ".org"})
MARKUP_EXTENSIONS = {".md": "markdown", ".markdown": "markdown", ".rst": "rst"}
MARKUPS = ("markdown", "rst", "plain", "none")
# Names (lower case, before any extension) of prose files that go without a text extension:
# README, NEWS, COPYING.LESSER, README.ctypes; and LICENSE-MIT, LICENSE_APACHE and the like.
PROSE_NAMES = frozenset({
    "readme", "license", "licence", "copying", "copyright", "notice", "authors", "contributors", "credits",
    "thanks", "changelog", "changes", "history", "news", "contributing", "install", "todo", "patents",
    "maintainers", "security", "code_of_conduct",
})

# extension (lower case) -> language, as in the domain `code:<language>`
LANGUAGES = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".java": "java",
    ".c": "c", ".h": "c",  # `.h` is also C++'s; C is the safer guess for a header alone
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
    ".cu": "cuda", ".cuh": "cuda",
    ".go": "go",
    ".rs": "rust",
    ".rb": "ruby",
    ".php": "php",
    ".cs": "csharp",
    ".swift": "swift",
    ".kt": "kotlin", ".kts": "kotlin",
    ".scala": "scala",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell",
    ".ps1": "powershell",
    ".lua": "lua",
    ".r": "r",
    ".jl": "julia",
    ".pl": "perl", ".pm": "perl",
    ".hs": "haskell",
    ".ml": "ocaml", ".mli": "ocaml",
    ".ex": "elixir", ".exs": "elixir",
    ".erl": "erlang",
    ".clj": "clojure",
    ".dart": "dart",
    ".zig": "zig",
    ".f90": "fortran", ".f95": "fortran",
    ".groovy": "groovy", ".gradle": "groovy",
    ".sql": "sql",
    ".html": "html", ".htm": "html",
    ".css": "css", ".scss": "scss",
    ".vue": "vue",
    ".xml": "xml",
    ".proto": "protobuf",
    ".tex": "tex",
    ".json": "json",
    ".yaml": "yaml", ".yml": "yaml",
    ".toml": "toml",
    ".cmake": "cmake",
    ".mk": "make",
}
# whole file names (lower case) that say their language without an extension
LANGUAGE_FILENAMES = {
    "makefile": "make", "gnumakefile": "make",
    "dockerfile": "dockerfile", "containerfile": "dockerfile",
    "cmakelists.txt": "cmake",
    "rakefile": "ruby", "gemfile": "ruby",
    "jenkinsfile": "groovy",
}


def language_of(path: str) -> str | None:
    """The language of a code file from its name (`Makefile`, `Dockerfile`) or extension, or
    None (prose files included: `is_prose_file`)."""
    name = os.path.basename(path).lower()
    if name in LANGUAGE_FILENAMES:
        return LANGUAGE_FILENAMES[name]
    if name.startswith("dockerfile.") or name.endswith(".dockerfile"):
        return "dockerfile"
    if name.startswith("."):
        return None  # dotfiles (.bashrc, .eslintrc.json) are configuration, not code
    return LANGUAGES.get(os.path.splitext(name)[1])


def is_prose_file(path: str) -> bool:
    """Whether a file of a code repository is prose (a text document, not code): a text extension
    (`TEXT_EXTENSIONS`), or a name such as README, LICENSE-MIT or COPYING.LESSER (`PROSE_NAMES`)
    without a code extension. `CMakeLists.txt` is code."""
    name = os.path.basename(path).lower()
    if name.startswith(".") or name in LANGUAGE_FILENAMES:
        return False
    ext = os.path.splitext(name)[1]
    if ext in TEXT_EXTENSIONS:
        return True
    stem = os.path.splitext(name)[0]
    return ext not in LANGUAGES and (stem in PROSE_NAMES or re.match(r"(?:licen[cs]e|copying)[-_]", stem) is not None)


def markup_of(path: str) -> str:
    """The markup of a text file by its extension: "markdown", "rst", else "plain" (text laid out
    by its author, perhaps hard-wrapped; see `loom.data.quality.MARKUPS`)."""
    return MARKUP_EXTENSIONS.get(os.path.splitext(path)[1].lower(), "plain")
