"""Speed, accuracy and memory of watcherd's engine against its peers, side by side."""
