"""Test support for driving the real OpenCode CLI against a scripted model server.

- :mod:`tests.opencode_support.fake_openai`: a scripted OpenAI-compatible chat-completions
  server (stdlib only), reusable for any HTTP client test (LiteLLM, DSPy, OpenCode).
- :mod:`tests.opencode_support.opencode_env`: install OpenCode from npm into a cache and build
  an isolated environment (temp HOME/XDG dirs, provider config) to run it headless.
- :mod:`tests.opencode_support.record`: record a set of real OpenCode sessions
  (``python -m tests.opencode_support.record OUT_DIR``).
"""
