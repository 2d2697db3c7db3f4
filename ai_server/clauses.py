"""Cut streaming LLM text into speakable clauses, the first one as early as possible.

TTS cannot start on half a word, and speaking word by word sounds robotic; a clause is
the smallest unit that still sounds natural. The first clause of a reply is cut at the
first sentence end, or at a comma/semicolon/colon once it has ``first_min_words`` words,
or before a conjunction ("and", "but", ...) once it has one word more, or, once it has
``first_cut_words`` words, before a word that opens a new phrase (a preposition, a verb like
"is"/"will", "which"...) when the word before it closes one (not a number, an article or another
word that leaves the phrase hanging): "The forecast for Paris tomorrow | is sunny", "It will be
25 degrees | in Paris". Failing all that, it is forced at a word boundary after
``first_max_words`` (not inside a number said in words). It gates the first audio the user
hears, and piper's time grows with the clause's length (issue 20: later replies began with
longer sentences, +40 ms to generate and +30 ms to synthesise by the fifth turn; these cuts keep
the first clause short on every turn). Later clauses only need to stay ahead of playback, so they are longer
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
# A first clause is not cut right after these: the phrase would hang ("set a timer for |").
HANGING_WORDS = frozenset(
    {
        "a", "an", "the", "to", "of", "in", "on", "at", "for", "with", "by", "from", "into", "about", "as",
        "than", "per", "over", "under", "after", "before", "between", "my", "your", "his", "her", "its",
        "our", "their", "this", "that", "these", "those", "is", "are", "was", "were", "be", "been", "will",
        "would", "can", "could", "should", "may", "might", "must", "do", "does", "did", "have", "has", "had",
        "not", "very", "i", "you", "we", "they", "he", "she", "it", "it's", "i'm", "you're", "there", "some",
        "any", "no", "every", "each", "all", "more", "most", "less", "just", "also", "really", "quite",
    }
)  # fmt: skip
# Nor inside a number said in words ("twenty | five", "three hundred | and").
NUMBER_WORDS = frozenset(
    {
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
        "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "hundred", "thousand", "million",
        "billion", "half", "quarter", "point", "minus",
    }
)  # fmt: skip
# Words that open a new phrase: a first clause may be cut right before one. Not the particles of
# phrasal verbs ("put the kettle on", "turn it off"): "on", "off", "up", "over", "about", "by".
PHRASE_STARTERS = frozenset(
    {
        "in", "at", "for", "with", "from", "into", "after", "before", "during", "until", "since", "near",
        "through", "across", "between", "without", "within", "to",
        "is", "are", "was", "were", "will", "would", "can", "could", "should", "may", "might", "must", "has",
        "have", "had", "which", "that", "who", "where", "when", "if", "unless", "whereas",
    }
)  # fmt: skip
_MARKDOWN = re.compile(r"[*_#`~|<>\[\]]+")
_BULLET = re.compile(r"(?m)^\s*(?:[-•]|\d+[.)])\s+")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[A-Za-z0-9]")


def speakable(text: str) -> str:
    """Strip markdown and list markup a small model emits despite being told not to."""
    text = _BULLET.sub("", text)
    text = _MARKDOWN.sub("", text)
    return _SPACES.sub(" ", text).strip()


def ends_a_phrase(word: str) -> bool:
    """Whether a first clause may stop after ``word``: not a number, nor a word that needs the next.
    (A word ending in punctuation is cut at its mark by the other rules.)"""
    bare = word.lower().strip("\"'()[]{}“”‘’")
    if not bare or any(c.isdigit() for c in bare):
        return False
    return bare not in HANGING_WORDS and bare not in NUMBER_WORDS and bare.replace("-", "").replace("'", "").isalpha()


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
        first_cut_words: int = 5,
    ) -> None:
        self.first_min_words = first_min_words
        self.min_words = min_words
        self.first_max_words = first_max_words
        self.first_cut_words = first_cut_words
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
        previous = ""  # the word before the current one
        for i, ch in enumerate(buf):
            if ch.isspace():
                if in_word:
                    words += 1
                    word = buf[word_start:i].lower()
                    if first and words - 1 >= self.first_min_words + 1 and word in CONJUNCTIONS:
                        return word_start  # "Set a timer for ten minutes | and play music."
                    if (
                        first
                        and words - 1 >= self.first_cut_words
                        and word in PHRASE_STARTERS
                        and ends_a_phrase(previous)
                    ):
                        return word_start  # "The forecast for Paris tomorrow | is sunny."
                    previous = word
                in_word = False
                if ch == "\n" and words > 0:
                    return i + 1
                # A forced first cut waits a word or two past a number word ("... twenty | five").
                hold = first and not ends_a_phrase(previous) and words < max_words + 3
                if words >= max_words and not hold:
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
