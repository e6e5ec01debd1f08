"""Captions from a name plus the colour its artwork shows: "star" -> "a yellow star".

For converters whose source names a picture but not its colour (datasets/twemoji.py). The
palette and its bounds fit flat vector art such as emoji; a name that already says a colour
keeps it.
"""
from __future__ import annotations

import re

import numpy as np

PALETTE = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray")
# A name holding one of these already says its colour: a computed word could only repeat or
# contradict it ("a red red heart", "a pink white flower").
NAME_COLOUR_WORDS = set(PALETTE) | {"grey", "gold", "golden", "silver", "rainbow"}
ALPHA_MIN = 128                         # pixels below this opacity are anti-aliased edges or shadows


def pixel_colours(rgb: np.ndarray) -> np.ndarray:
    """rgb: [N, 3] uint8 -> [N] index into PALETTE, one per pixel.

    Low saturation is black/gray/white by value; otherwise the hue picks the colour, with pink
    for light reds and brown for dark or dull oranges. The bounds fit Twemoji's flat palette:
    orange #F4900C has hue 34 degrees and the star/sun gold #FFAC33 36, so yellow starts at 35.
    """
    x = rgb.astype(np.float32) / 255
    mx, mn = x.max(1), x.min(1)
    v = mx
    s = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    d = np.maximum(mx - mn, 1e-6)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    h = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) * 60
    idx = {c: i for i, c in enumerate(PALETTE)}
    out = np.full(len(rgb), idx["gray"], np.int64)
    # Chromatic pixels first, by hue; later assignments refine earlier ones.
    for name, lo, hi in (("red", 345, 360), ("red", 0, 10), ("orange", 10, 35), ("yellow", 35, 70),
                         ("green", 70, 170), ("blue", 170, 255), ("purple", 255, 290), ("pink", 290, 345)):
        out[(h >= lo) & (h < hi)] = idx[name]
    reddish = (h >= 345) | (h < 10)
    out[reddish & (s < 0.5) & (v >= 0.7)] = idx["pink"]                 # #F4ABBA, the pink heart
    out[reddish & (v < 0.45)] = idx["brown"]                            # maroon reads as brown
    dull = (h >= 10) & (h < 45) & ((v < 0.6) | ((s < 0.65) & (v < 0.9)))
    out[dull] = idx["brown"]                                            # #C1694F, #662113, #D5AB88
    out[(s >= 0.25) & (v < 0.25)] = idx["black"]                        # too dark to see a hue
    grey = s < 0.25
    out[grey] = idx["gray"]
    out[grey & (v < 0.3)] = idx["black"]                                # #292F33
    out[grey & (v >= 0.85)] = idx["white"]                              # #E1E8ED, #CCD6DD
    return out


def dominant_colour(rgba: np.ndarray) -> str | None:
    """rgba: [H, W, 4] uint8 -> the most common PALETTE colour of its opaque pixels (ties go to
    the earlier palette entry), or None when nothing is opaque."""
    px = rgba[rgba[..., 3] >= ALPHA_MIN][:, :3]
    if len(px) == 0:
        return None
    counts = np.bincount(pixel_colours(px), minlength=len(PALETTE))
    return PALETTE[int(np.argmax(counts))]


# ---------------------------------------------------------------------------

def _is_plural(name: str) -> bool:
    """"sparkles", "women holding hands": no "a" before them. Looks at the head of the name,
    before "with"/"of"/":"..., so "smiling face with hearts" stays singular."""
    words = re.split(r"\s+", name.split(":")[0].strip())
    if not words or not words[0]:
        return False
    if words[0] in ("people", "men", "women"):
        return True
    head = []
    for w in words:
        if w in ("with", "of", "in", "on", "showing", "holding", "for", "and"):
            break
        head.append(w)
    last = (head or words)[-1]
    return last.endswith("s") and not last.endswith(("ss", "us", "is", "'s"))


def _article(phrase: str, name: str) -> str:
    """"a", "an", or "" when `name` is plural, for `phrase` (the name, maybe after a colour word:
    "yellow women holding hands" is plural because its name is)."""
    if _is_plural(name):
        return ""
    p = phrase.lower()
    if p.startswith(("uni", "use", "eu", "one", "once")):
        return "a"                                  # "a unicorn", "a european castle"
    if p.startswith(("hour", "honest")):
        return "an"
    return "an" if p[:1] in "aeiou" else "a"


def _with_article(phrase: str, name: str) -> str:
    a = _article(phrase, name)
    return f"{a} {phrase}" if a else phrase


def captions_for(name: str, colour: str | None) -> list[str]:
    """Captions of one emoji, in a fixed order and without repeats:
    name, "a <colour> <name>", "an emoji of a <name>", "a <colour> <name> emoji"."""
    says_colour = bool(NAME_COLOUR_WORDS & set(re.findall(r"[a-z]+", name)))
    coloured = name if (colour is None or says_colour) else f"{colour} {name}"
    caps = [name, _with_article(coloured, name), f"an emoji of {_with_article(name, name)}",
            f"{_with_article(coloured, name)} emoji"]
    return list(dict.fromkeys(c for c in caps if c))
