"""Judge replies kept by what was asked, so rerunning an evaluation costs nothing.

The key is everything that decides the reply: the judge model, the rubric's version, the exact
messages and the repeat's number (repeat 2 of a question is its own sample, never repeat 1's
reply again). The raw reply is kept, not the parsed scores, so a stricter parser applies to old
replies too. SQLite, one file in the storage folder; safe across processes.
"""

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CachedReply:
    text: str
    prompt_tokens: int
    completion_tokens: int


def reply_key(model: str, prompt_version: str, messages: list[dict], repeat: int) -> str:
    material = json.dumps([model, prompt_version, messages, repeat], sort_keys=True)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class JudgeCache:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
                "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL)"
            )

    def get(self, key: str) -> CachedReply | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT text, prompt_tokens, completion_tokens FROM replies WHERE key = ?", (key,)
            ).fetchone()
        return CachedReply(*row) if row else None

    def put(self, key: str, reply: CachedReply) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?)",
                (key, reply.text, reply.prompt_tokens, reply.completion_tokens),
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)
