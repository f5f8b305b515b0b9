"""Performance benchmarks (standalone scripts, not tests); results go to ``benchmarks/results``."""
