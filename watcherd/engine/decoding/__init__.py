"""From audio features to timed text: batched decoding under Whisper's logit rules, the
prompt, language detection, segments and word timings."""
