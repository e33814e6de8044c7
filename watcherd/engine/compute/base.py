"""What every compute path does for the engine: the contract the stages are written against.

A `Compute` holds one loaded Whisper model's arithmetic. The stages (encoding, batched
decoding, word alignment, language detection) call only these methods and use only the
array namespace `xp`; none of them knows which implementation it has. Arrays handed out
(`features`, keys and values, logits) are the implementation's own (`xp` arrays); token
ids come in as NumPy or `xp` arrays of int32, and `to_numpy` brings any result back.

Shapes, for a batch of B windows and a model of width d with H heads of size Dh:
- mel windows (B, 3000, n_mels); audio features (B, 1500, d);
- cross-attention keys/values, per decoder layer: keys (B, H, Dh, 1500), scaled by
  Dh**-0.25, and values (B, H, 1500, Dh);
- the self-attention cache, per layer: keys and values (B, H, length, Dh);
- logits (B, n_vocab), float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import numpy as np
from mlx_whisper.whisper import Whisper

KeysValues = list[tuple]  # per decoder layer: (keys, values)


class Encoding:
    """Windows in, audio features out, for one transcription. An implementation may start
    encoding a window as soon as it is added, while the caller cuts and decodes."""

    def batch(self) -> Batch:
        """A new batch, to be given its windows one by one."""
        raise NotImplementedError

    @contextmanager
    def busy(self) -> Iterator[None]:
        """The caller is busy meanwhile (cutting chunks, decoding): work started now should
        leave it a share of the machine."""
        yield

    def idle(self) -> None:
        """Nothing more is added for now: the work in flight may use the whole machine."""

    def close(self) -> None:
        """Abandon whatever is still being encoded."""


class Batch:
    """One batch's windows."""

    def add(self, mel) -> None:
        """A log-mel window (3000, n_mels), as `mel.window` makes it."""
        raise NotImplementedError

    def features(self):
        """The batch's audio features (B, 1500, d), once every window is encoded."""
        raise NotImplementedError


class Compute:
    """A loaded model's arithmetic. Subclasses implement every method below."""

    name: str  # "mlx" or "cpu": in logs and benchmarks
    xp: ModuleType  # the array namespace of everything handed out: mlx.core or numpy
    # Decoding checks whether every row has ended each `sync_every` steps: reading a
    # value back from an accelerator waits for the queued work, on the CPU it is free.
    sync_every: int = 1
    # The most rows decoded at once. A CPU's decoder step reads every live row's keys and
    # values from memory, so its cost grows with the batch; an accelerator's hardly does.
    max_batch: int = 8
    # Cores the model's work leaves free, for the audio's decoding and VAD to run ahead
    # in threads: none on a CPU, whose cores the encoder and decoder share.
    spare_cores: int = 0

    def __init__(self, model: Whisper):
        self.model = model
        self.dims = model.dims

    def memory_bytes(self) -> int | None:
        """Memory the batches may share, when the device has its own (None: the system's
        free memory)."""
        return None

    # --- the encoder -----------------------------------------------------------------

    def encoding(self) -> Encoding:
        """An encoder session for one transcription; close it when done."""
        raise NotImplementedError

    def encode(self, mels):
        """Audio features of a stack of mel windows, at once."""
        encoding = self.encoding()
        try:
            batch = encoding.batch()
            for mel in mels:
                batch.add(mel)
            return batch.features()
        finally:
            encoding.close()

    # --- the decoder -----------------------------------------------------------------

    def cross_kv(self, features) -> KeysValues:
        """The cross-attention keys and values of each decoder layer, projected, split into
        heads and scaled once per batch (not again on every step)."""
        raise NotImplementedError

    def empty_cache(self, batch: int, length: int) -> KeysValues:
        """A self-attention cache for `length` positions, written in place step by step."""
        raise NotImplementedError

    def logits(self, tokens, pos: int, self_kv: KeysValues, cross_kv: KeysValues, done=None):
        """Logits after `tokens` (B, n) at position `pos`, and the updated cache. Rows
        where `done` (B,) is true have ended: they may get any logits."""
        raise NotImplementedError

    def prefix_logits(self, tokens, self_kv: KeysValues, cross_kv: KeysValues, at: tuple):
        """A pass over a whole prompt `tokens` (B, n) from position 0: the logits at the
        positions `at` (B, len(at), vocab), and the cache, written for every position."""
        raise NotImplementedError

    def log_softmax(self, logits):
        raise NotImplementedError

    def batch_size(self, rows: int) -> int:
        """How many rows to decode for `rows`: more, padded with ended rows, where every new
        batch size would cost a compilation."""
        return rows

    def alignment_scores(self, tokens: np.ndarray, cross_kv: KeysValues) -> np.ndarray:
        """A teacher-forced pass over `tokens` (R, L): the cross-attention scores (before
        softmax) of the model's alignment heads, (R, K, L, 1500), as float32 NumPy."""
        raise NotImplementedError

    # --- choosing tokens -------------------------------------------------------------

    def sample(self, logits, temperature: float, noise):
        """A token per row: the likeliest, or at `temperature`, drawn with `noise`."""
        raise NotImplementedError

    def noise(self, seeds: list[int], steps: int) -> list:
        """Randomness for `steps` sampling steps, each row's from its own seed: a row draws
        the same tokens whatever else is in its batch (a file resumed after a crash decodes
        its chunks in other batches, and must read as it did)."""
        raise NotImplementedError

    def schedule(self, *arrays) -> None:
        """Let the work that makes `arrays` start, without waiting for it."""

    def step(self, function):
        """The decoder's step (`BatchDecoder._step`: a function of arrays and a position),
        made as fast as this path can run it; on the CPU it runs as it is."""
        return function

    # --- array operations for the logit rules (`decoding.rules`) ---------------------

    def split(self, logits, at: int) -> tuple:
        """The columns before and from `at`. The rules change the two parts; `join` puts
        them back (in place where the implementation can)."""
        raise NotImplementedError

    def join(self, logits, left, right):
        raise NotImplementedError

    def add(self, x, values):
        """x + values (values broadcast along the rows); x may be changed in place."""
        raise NotImplementedError

    def fill(self, x, mask, value: float):
        """x with `value` where `mask` (x's shape); x may be changed in place."""
        raise NotImplementedError

    def fill_rows(self, x, rows, value: float, start: int = 0, stop: int | None = None):
        """x with `value` in the columns from `start` to `stop` (the last when None) of the
        rows where `rows` (B,) is true; x may be changed in place."""
        raise NotImplementedError

    def logsumexp(self, x):
        """log(sum(exp(x))) along the rows, kept as a column; -inf for a row of -inf."""
        raise NotImplementedError

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)
