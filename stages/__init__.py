"""The DVC stages: each parses its arguments, loads, calls weldnet and writes (importing weldnet first sets up
torch's threads; see weldnet/__init__.py)."""
import weldnet  # noqa: F401
