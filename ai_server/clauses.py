"""Cut streaming LLM text into speakable clauses, the first one as early as possible.

TTS cannot start on half a word, and speaking word by word sounds robotic; a clause is
the smallest unit that still sounds natural. The first clause of a reply is cut at the
first sentence end, or at a comma/semicolon/colon once it has ``first_min_words`` words,
or before a conjunction ("and", "but", ...) once it has one word more, or forcibly at a
word boundary after ``first_max_words`` - it gates the first audio the user hears, and
piper's time grows with the clause's length. Later clauses only need to stay ahead of playback, so they are longer
(``min_words`` before a comma cut), which gives better prosody.

A boundary counts only once the next character is known (whitespace after the mark), so
"3.5" and "1,000" are never split, and common abbreviations ("Dr.", "e.g.") are skipped. The
first clause does not wait for that next token at a "!", "?" or "…", nor at a "." after a
letter that ends no abbreviation: none of these can continue a number, and the token it saves
(15-25 ms with the shipped model) comes straight off the first audio.
"""

from __future__ import annotations

import re

SENTENCE_MARKS = ".!?…"
CLAUSE_MARKS = ",;:—–"
CLOSERS = "\"')]}”’»"
CONJUNCTIONS = frozenset({"and", "but", "so", "or", "because", "which", "while", "although", "then"})
ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "st", "vs", "etc", "e.g", "i.e", "jr", "sr", "prof", "mt", "approx", "no", "fig"}
)
_MARKDOWN = re.compile(r"[*_#`~|<>\[\]]+")
_BULLET = re.compile(r"(?m)^\s*(?:[-•]|\d+[.)])\s+")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[A-Za-z0-9]")


def speakable(text: str) -> str:
    """Strip markdown and list markup a small model emits despite being told not to."""
    text = _BULLET.sub("", text)
    text = _MARKDOWN.sub("", text)
    return _SPACES.sub(" ", text).strip()


def _is_abbreviation(buf: str, dot: int) -> bool:
    start = dot
    while start > 0 and not buf[start - 1].isspace():
        start -= 1
    word = buf[start:dot].lower().lstrip("(\"'")
    return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())


class ClauseSplitter:
    def __init__(
        self,
        first_min_words: int = 3,
        min_words: int = 8,
        first_max_words: int = 14,
        max_words: int = 30,
    ) -> None:
        self.first_min_words = first_min_words
        self.min_words = min_words
        self.first_max_words = first_max_words
        self.max_words = max_words
        self._buf = ""
        self._emitted = 0

    def push(self, text: str) -> list[str]:
        """Add generated text; return the clauses now complete (possibly none)."""
        self._buf += text
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            self._emit(self._buf[:cut], out)
            self._buf = self._buf[cut:].lstrip()
        return out

    def flush(self) -> list[str]:
        """The end of the reply: whatever is left is the last clause."""
        out: list[str] = []
        self._emit(self._buf, out)
        self._buf = ""
        return out

    def _emit(self, raw: str, out: list[str]) -> None:
        clause = speakable(raw)
        if _WORD.search(clause):
            out.append(clause)
            self._emitted += 1

    @staticmethod
    def _ends_sentence_now(buf: str, i: int) -> bool:
        """A mark at the end of the text so far that ends a sentence whatever comes next."""
        if buf[i] in "!?…":
            return True
        return buf[i] == "." and i > 0 and buf[i - 1].isalpha() and not _is_abbreviation(buf, i)

    def _find_cut(self) -> int | None:
        buf = self._buf
        first = self._emitted == 0
        min_words = self.first_min_words if first else self.min_words
        max_words = self.first_max_words if first else self.max_words
        words = 0
        in_word = False
        word_start = 0
        for i, ch in enumerate(buf):
            if ch.isspace():
                if in_word:
                    words += 1
                    if first and words - 1 >= self.first_min_words + 1 and buf[word_start:i].lower() in CONJUNCTIONS:
                        return word_start  # "Set a timer for ten minutes | and play music."
                in_word = False
                if ch == "\n" and words > 0:
                    return i + 1
                if words >= max_words:
                    return i + 1
                continue
            if not in_word:
                word_start = i
            in_word = True
            if ch in SENTENCE_MARKS or ch in CLAUSE_MARKS:
                j = i + 1
                while j < len(buf) and buf[j] in CLOSERS:
                    j += 1
                if j >= len(buf) and first and self._ends_sentence_now(buf, i):
                    return j
                if j >= len(buf) or not buf[j].isspace():
                    continue  # next character unknown yet, or "3.5" / "1,000"
                if ch in SENTENCE_MARKS:
                    if ch == "." and _is_abbreviation(buf, i):
                        continue
                    return j
                if words + 1 >= min_words:
                    return j
        return None
