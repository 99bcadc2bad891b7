"""What users asked and how they rated the answers: one SQLite file beside the server.

Every completion the server writes is a row of `completions`: the request (the messages of a
chat, or a completion's prompt, as JSON), the answer, why it ended, the token counts and the
time; `prompt_key` is a hash of the request's content, so two answers to the same conversation
(a regenerated answer, say) can be told apart as a preference pair. A rating (+1 or -1, and an
optional comment) is a row of `ratings` naming a completion; the newest rating of a completion
is the one that counts.

The file is in WAL mode with `synchronous=FULL`: a row is on disk when its commit returns, so the
server commits an answer before it sends the answer's last chunk, and a server killed in the
middle of another stream loses nothing that was finished.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,            -- 'chat' or 'text'
    request TEXT NOT NULL,         -- JSON: the chat's messages, or the prompt text
    prompt_key TEXT NOT NULL,      -- sha256 of the request's content
    answer TEXT NOT NULL,
    finish_reason TEXT,            -- 'stop', 'length', or 'cancelled' when the client left
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    client TEXT NOT NULL           -- 'page' for the web page, else 'api'
);
CREATE INDEX IF NOT EXISTS completions_by_prompt ON completions (prompt_key);
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    completion_id TEXT NOT NULL REFERENCES completions (id),
    rating INTEGER NOT NULL CHECK (rating IN (-1, 1)),
    comment TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ratings_by_completion ON ratings (completion_id);
"""


def prompt_key(kind: str, request) -> str:
    return hashlib.sha256(json.dumps([kind, request], sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one connection shared by the server's threads, one writer at a time
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)

    def add_completion(self, id: str, model: str, kind: str, request, answer: str, finish_reason: str | None,
                       prompt_tokens: int, completion_tokens: int, client: str = "api") -> None:
        row = (id, time.time(), model, kind, json.dumps(request, ensure_ascii=False), prompt_key(kind, request),
               answer, finish_reason, prompt_tokens, completion_tokens, client)
        with self.lock:
            self.db.execute("INSERT INTO completions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

    def has_completion(self, id: str) -> bool:
        with self.lock:
            return self.db.execute("SELECT 1 FROM completions WHERE id = ?", (id,)).fetchone() is not None

    def add_rating(self, completion_id: str, rating: int, comment: str = "") -> int:
        with self.lock:
            cursor = self.db.execute(
                "INSERT INTO ratings (completion_id, rating, comment, created) VALUES (?, ?, ?, ?)",
                (completion_id, rating, comment, time.time()))
            return cursor.lastrowid

    def close(self) -> None:
        with self.lock:
            self.db.close()


def rated_completions(path: str | Path) -> list[dict]:
    """Every completion with its newest rating (None when unrated), oldest first; read-only."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        rows = db.execute("""
            SELECT c.*, r.rating, r.comment FROM completions c
            LEFT JOIN ratings r ON r.id = (SELECT MAX(id) FROM ratings WHERE completion_id = c.id)
            ORDER BY c.created, c.id""").fetchall()
    finally:
        db.close()
    return [dict(row, request=json.loads(row["request"])) for row in rows]
