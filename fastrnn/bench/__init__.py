"""The benchmark suite (`fastrnn bench`): peers as optional imports, timing, limits."""
