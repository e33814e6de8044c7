"""Which language a file speaks, from the first batch of its windows."""

from __future__ import annotations

import numpy as np
from mlx_whisper.tokenizer import get_tokenizer

from watcherd.engine.compute import Compute


def detect(compute: Compute, features, weights: list[float]) -> tuple[str, float]:
    """The language of a batch of windows and its probability: every window's language
    probabilities averaged, weighted by its length. One short window alone is unreliable
    (base calls 0.6 s of French English, or Turkish, or Hindi)."""
    tokenizer = get_tokenizer(True, num_languages=compute.model.num_languages)
    rows = len(weights)
    tokens = np.full((rows, 1), tokenizer.sot, np.int32)
    cache = compute.empty_cache(rows, 1)
    logits, _ = compute.logits(tokens, 0, cache, compute.cross_kv(features))
    languages = list(tokenizer.all_language_tokens)
    scores = compute.to_numpy(logits)[:, languages].astype(np.float64)
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    mean = np.asarray(weights) @ probs / (sum(weights) or 1.0)
    best = int(np.argmax(mean))
    return tokenizer.all_language_codes[best], float(mean[best])
