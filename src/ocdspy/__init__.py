"""ocdspy: turn recorded OpenCode sessions into an optimized DSPy prompt and an OpenCode agent."""

__version__ = "0.1.0"
