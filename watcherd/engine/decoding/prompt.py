"""The tokens a window's decoding starts from: the tokenizer for a language and task, the
start-of-transcript sequence, and the user's vocabulary hints before it."""

from __future__ import annotations

from mlx_whisper.tokenizer import Tokenizer, get_tokenizer


def tokenizer(multilingual: bool, num_languages: int, language: str | None, task: str) -> Tokenizer:
    """English-only models know one language and one task."""
    if not multilingual:
        return get_tokenizer(False, num_languages=num_languages, language="en", task="transcribe")
    return get_tokenizer(True, num_languages=num_languages, language=language, task=task)


def prefix(tokenizer: Tokenizer, initial_prompt: str | None, n_text_ctx: int) -> list[int]:
    """The start-of-transcript sequence, after the initial prompt given as the previous
    text (as much of its end as half the text context holds, as Whisper does)."""
    sequence = list(tokenizer.sot_sequence)
    if not initial_prompt:
        return sequence
    prompt = tokenizer.encode(" " + initial_prompt.strip())
    return [tokenizer.sot_prev, *prompt[-(n_text_ctx // 2 - 1) :], *sequence]
