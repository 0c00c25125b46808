"""Engine tests run with the plugin importable as ``deepfield`` (see Makefile: PYTHONPATH)."""
