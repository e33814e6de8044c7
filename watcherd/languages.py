"""Language codes in the forms media servers read in subtitle names: `movie.en.srt`
(ISO 639-1) or `movie.eng.srt` (ISO 639-2).

Whisper names languages by ISO 639-1 code where one exists ("en", "fr") and by a
three-letter code where none does ("haw", "yue"); it still says "jw" for Javanese, a code
ISO withdrew for "jv" in 2001. `langcodes` (the IANA registry) maps between the forms. The
three-letter form is ISO 639-2/B ("fre", "ger", "chi"): the one Plex documents, and one
that Jellyfin and Kodi read as well as the /T form ("fra").
"""

from __future__ import annotations

import functools

import langcodes

STYLES = ("language", "language3")  # the `subtitle_names` that put a language in names


@functools.cache
def tag(code: str, style: str) -> str | None:
    """The language `code` as `style` writes it ("language": ISO 639-1, or the
    three-letter code of a language that has none; "language3": ISO 639-2/B, or ISO
    639-3 where 639-2 has no code). None for anything that is not a language code."""
    if style not in STYLES:
        raise ValueError(f"unknown subtitle name style {style!r}")
    try:
        given = langcodes.Language.get(code, normalize=False)
        three = given.to_alpha3()
    except (LookupError, ValueError):
        return None
    if given.territory or given.script:  # "en-US": the language alone
        given = langcodes.Language.get(given.language, normalize=False)
    # Withdrawn codes ("jw", "iw") become the current code of the same language; the
    # registry's other replacements are not taken when they change the language itself
    # (it would turn Tagalog, "tl", into Filipino, "fil").
    current = langcodes.Language.get(given.language)
    same = three in {current.to_alpha3(), current.to_alpha3(variant="B")}
    short = current.language if same else given.language
    if style == "language3":
        return langcodes.Language.get(short, normalize=False).to_alpha3(variant="B")
    return short
