"""Whisper's tests of a decoded row, and what is done about failures: temperature
fallback, silence, stretches a row skipped or ended early on, and repetition loops."""
