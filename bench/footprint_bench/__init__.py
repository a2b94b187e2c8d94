"""bench/footprint.py: idle memory, start-up time and streaming memory per placement."""
