"""From a file to the encoder's windows: decoding (PyAV), voice activity (silero), chunks
of at most 30 s cut where no word is split, and each chunk's log-mel window."""
