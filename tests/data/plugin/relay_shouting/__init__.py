"""A match kind for the marketplace relay: text written in capital letters.

match:
  shouting: {min_words: 5}
"""

from typing import Any


class Shouting:
    def __init__(self, min_words: int) -> None:
        self.min_words = min_words

    def find(self, view: Any) -> list[str]:
        found = []
        for where, text in view.texts():
            loud = [w for w in text.split() if len(w) > 1 and w.isalpha() and w.isupper()]
            if len(loud) >= self.min_words:
                found.append(f"{len(loud)} words in capitals in the {where}")
        return found


def shouting(settings: Any) -> Shouting:
    settings = settings or {}
    min_words = settings.get("min_words", 5)
    if not isinstance(min_words, int) or min_words < 1:
        raise ValueError("min_words must be a positive whole number")
    return Shouting(min_words)
