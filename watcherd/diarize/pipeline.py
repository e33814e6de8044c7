"""Who spoke when: segmentation-3.0 and CAM++ with ONNX Runtime, clustered with SciPy.

The recipe is pyannote's (3.x) with lighter parts:

1. **Local segmentation.** 10 s windows every `step` seconds go through segmentation-3.0,
   which says for every 17 ms frame which of up to three *local* speakers talk, two at
   once included (its powerset classes).
2. **Embeddings.** For each window and local speaker with enough speech, CAM++ embeds the
   frames where that speaker talks alone (overlap left out, when enough remains).
3. **Clustering.** The embeddings are clustered (average linkage on cosine distance,
   cut at a threshold, or at the hinted number of speakers); small clusters join their
   nearest large one.
4. **Assignment and reconstruction.** Each window's local speakers are matched to the
   global speakers (Hungarian, so two local speakers of one window never merge); per
   frame, the number of speakers the windows agree on is kept, the most active first.

Audio arrives in blocks (a whole array, or the decoder's stream) and only one window is
held at a time, so memory does not grow with the length of the file beyond the per-window
labels and embeddings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from watcherd.diarize import Diarization, SpeakerHint
from watcherd.diarize.fbank import HOP, fbank
from watcherd.transcript import Turn

SAMPLE_RATE = 16_000
WINDOW = 10 * SAMPLE_RATE
FRAMES = 589  # segmentation frames per window
FRAME_STEP = 0.016875  # seconds between segmentation frames (270 samples)
FRAME_SECONDS = 0.0619375  # what one frame covers
# powerset class -> the local speakers it means
POWERSET = np.array(
    [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]],
    dtype=np.uint8,
)


@dataclass(frozen=True)
class Tuning:
    step: float = 2.5  # seconds between window starts
    min_cluster_seconds: float = 0.3  # speech a local speaker needs to take part in clustering
    min_embed_seconds: float = 0.2  # shorter local speakers are left out (no voice to go by)
    max_embed_seconds: float = 3.0  # the middle of a longer one is embedded (windows overlap)
    threshold: float = 0.5  # average cosine distance at which clusters stop merging
    min_cluster_share: float = 0.01  # of the embeddings: smaller clusters join the nearest
    batch: int = 1  # windows per segmentation call (8 held ~180 MB more for ~8% more speed)
    # Embeddings clustered at most (evenly spread over the file; the rest are assigned to
    # the clusters found): 2000 are 30-80 min of audio, 16 MB of pairwise distances.
    max_clustered: int = 2000


class OnnxDiarizer:
    """The pipeline above over two ONNX Runtime sessions, created once."""

    def __init__(self, segmentation: Path, embedding: Path, *, threads: int = 1, tuning=None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self.segmentation = onnxruntime.InferenceSession(
            str(segmentation), options, providers=providers
        )
        self.embedding = onnxruntime.InferenceSession(str(embedding), options, providers=providers)
        self.tuning = tuning or Tuning()

    def embed(self, samples: np.ndarray) -> np.ndarray:
        """One L2-normalised CAM++ embedding of 16 kHz samples (a reference voice)."""
        features = fbank(samples)
        return _unit(self.embedding.run(None, {"features": features[None]})[0][0])

    def diarize(
        self, audio: np.ndarray | Iterable[np.ndarray], hint: SpeakerHint | None = None
    ) -> Diarization:
        hint = hint or SpeakerHint()
        starts: list[int] = []
        local: list[np.ndarray] = []
        embeddings: list[np.ndarray] = []
        owners: list[tuple[int, int]] = []
        durations: list[float] = []
        pending: list[tuple[int, np.ndarray, int]] = []
        total = 0

        def flush() -> None:
            for (start, samples, length), active in zip(
                pending, self._segment([samples for _, samples, _ in pending]), strict=True
            ):
                active[_frames_in(length) :] = 0  # the zeros padding the last window
                for k, vector, seconds in self._embed_window(samples, active, length):
                    embeddings.append(vector)
                    owners.append((len(starts), k))
                    durations.append(seconds)
                starts.append(start)
                local.append(active)
            pending.clear()

        for start, samples, length in _windows(_blocks(audio), int(self.tuning.step * SAMPLE_RATE)):
            total = max(total, start + length)
            pending.append((start, samples, length))
            if len(pending) == self.tuning.batch:
                flush()
        if pending:
            flush()
        return self._finish(starts, local, embeddings, owners, durations, total, hint)

    # The windows are segmented in batches; each window's speakers are embedded right away.
    def _segment(self, batch: list[np.ndarray]) -> np.ndarray:
        scores = self.segmentation.run(None, {"waveforms": np.stack(batch)[:, None, :]})[0]
        return POWERSET[scores.argmax(-1)]  # (batch, frames, 3) 0/1

    def _embed_window(self, samples: np.ndarray, active: np.ndarray, length: int):
        """Embeddings of the local speakers with enough speech in one window."""
        features = None
        alone = active * (active.sum(1, keepdims=True) == 1)
        out = []
        enough = self.tuning.min_embed_seconds / FRAME_STEP
        for k in range(active.shape[1]):
            mask = alone[:, k] if alone[:, k].sum() >= enough else active[:, k]
            if mask.sum() < enough:
                continue
            if features is None:
                features = fbank(samples[:length])
            chosen = _to_fbank_frames(mask, len(features))
            selected = features[chosen]
            cap = int(self.tuning.max_embed_seconds * SAMPLE_RATE / HOP)
            if len(selected) > cap:
                selected = selected[(len(selected) - cap) // 2 :][:cap]
            selected = selected - selected.mean(axis=0, keepdims=True)
            vector = self.embedding.run(None, {"features": selected[None]})[0][0]
            out.append((k, _unit(vector), float(mask.sum()) * FRAME_STEP))
        return out

    def _finish(self, starts, local, embeddings, owners, durations, total, hint) -> Diarization:
        if not embeddings:
            return Diarization([], np.zeros((0, 192), np.float32))
        from watcherd.diarize.clustering import assign, cluster

        vectors = np.stack(embeddings)
        long = np.asarray(durations) >= self.tuning.min_cluster_seconds
        if not long.any():
            long[:] = True
        members = vectors[long]
        if len(members) > self.tuning.max_clustered:  # the tree's memory is quadratic
            members = members[
                np.linspace(0, len(members) - 1, self.tuning.max_clustered).astype(int)
            ]
        labels = cluster(members, hint, self.tuning.threshold, self.tuning.min_cluster_share)
        centroids = np.stack([_unit(members[labels == c].mean(0)) for c in range(labels.max() + 1)])
        mapping = assign(len(starts), vectors, owners, centroids)
        turns, order = _reconstruct(starts, local, mapping, len(centroids), total)
        return Diarization(turns, centroids[order])


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _blocks(audio) -> Iterator[np.ndarray]:
    if isinstance(audio, np.ndarray):
        yield audio.astype(np.float32, copy=False)
    else:
        yield from audio


def _windows(blocks: Iterator[np.ndarray], step: int) -> Iterator[tuple[int, np.ndarray, int]]:
    """(start, 10 s of samples, how many of them are audio) every `step` samples; the
    last window is padded with zeros and ends the file."""
    buffer = np.zeros(0, dtype=np.float32)
    offset = start = 0  # sample index of buffer[0], of the next window
    for block in blocks:
        buffer = np.concatenate([buffer, block.astype(np.float32, copy=False)])
        while offset + len(buffer) >= start + WINDOW:
            yield start, buffer[start - offset : start - offset + WINDOW], WINDOW
            start += step
            if start > offset:
                buffer, offset = buffer[start - offset :], start
    end = offset + len(buffer)
    while start < end or start == 0:
        window = np.zeros(WINDOW, dtype=np.float32)
        tail = buffer[start - offset :]
        window[: len(tail)] = tail
        yield start, window, len(tail)
        if start + WINDOW >= end:
            break
        start += step


def _frames_in(samples: int) -> int:
    """Segmentation frames whose middle lies within the first `samples` of a window."""
    return min(FRAMES, max(0, int((samples / SAMPLE_RATE - FRAME_SECONDS / 2) / FRAME_STEP) + 1))


def _to_fbank_frames(mask: np.ndarray, count: int) -> np.ndarray:
    """A segmentation-frame mask as a mask over fbank frames (10 ms) of the same window."""
    centers = (np.arange(count) * HOP + 200) / SAMPLE_RATE  # each fbank frame's middle
    index = np.clip((centers / FRAME_STEP).astype(int), 0, len(mask) - 1)
    return mask[index].astype(bool)


def _reconstruct(starts, local, mapping, speakers: int, total: int):
    """Per global frame: as many speakers as the windows over it count on average, the
    most active first; then runs of frames become turns, numbered by first appearance.
    Returns the turns and, per new number, the cluster it was."""
    size = int(np.ceil(total / SAMPLE_RATE / FRAME_STEP)) + FRAMES
    activity = np.zeros((size, speakers), dtype=np.float32)
    count = np.zeros(size, dtype=np.float32)
    cover = np.zeros(size, dtype=np.float32)
    for window, start in enumerate(starts):
        first = int(round(start / SAMPLE_RATE / FRAME_STEP))
        span = slice(first, first + FRAMES)
        here = np.zeros((FRAMES, speakers), dtype=np.float32)
        for k in np.flatnonzero(mapping[window] >= 0):
            column = here[:, mapping[window][k]]
            np.maximum(column, local[window][:, k], out=column)
        activity[span] += here
        count[span] += local[window][:, mapping[window] >= 0].sum(1)
        cover[span] += 1
    covered = cover > 0
    activity[covered] /= cover[covered, None]
    wanted = np.zeros(size, dtype=int)
    wanted[covered] = np.rint(count[covered] / cover[covered]).astype(int)
    order = np.argsort(-activity, axis=1)
    chosen = np.zeros_like(activity, dtype=bool)
    for rank in range(min(speakers, 3)):
        rows = np.flatnonzero((wanted > rank) & (activity[np.arange(size), order[:, rank]] > 0))
        chosen[rows, order[rows, rank]] = True
    last = total / SAMPLE_RATE
    turns = []
    for speaker in range(speakers):
        padded = np.concatenate([[False], chosen[:, speaker], [False]])
        edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
        for on, off in zip(edges[::2], edges[1::2], strict=True):
            start = max(0.0, on * FRAME_STEP + (FRAME_SECONDS - FRAME_STEP) / 2)
            end = min(last, off * FRAME_STEP + (FRAME_SECONDS - FRAME_STEP) / 2)
            if end > start:
                turns.append((start, end, speaker))
    turns.sort()
    first_seen: dict[int, int] = {}
    for _, _, speaker in turns:
        first_seen.setdefault(speaker, len(first_seen))
    return [Turn(round(float(s), 3), round(float(e), 3), first_seen[k]) for s, e, k in turns], list(
        first_seen
    )
