"""Benchmarking helpers: peers (numpy always, PyTorch when installed) and timing."""
