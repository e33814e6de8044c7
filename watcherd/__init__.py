"""watcherd: a watch-folder transcription daemon (Whisper on MLX)."""

__version__ = "0.1.0"
