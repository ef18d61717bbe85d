"""The benchmarks' one-process-per-run launcher (see process_launcher)."""
