"""The agent program: what the model is asked, in two modes.

- `plan` (one example per recorded turn): from the task, the rendered context, the prior
  conversation and the list of available tools, predict the ordered tool calls (tool + main
  argument) and the final response.
- `next_action` (one example per recorded step, plus one for the final answer): from the task,
  the context and the tool calls so far with their outcomes, predict the next tool call, or
  `finish` with the final message. This is how the agent runs inside OpenCode.

`ocdspy.program.render` is dspy-free; `ocdspy.program.agent` holds the DSPy signatures and
modules and imports dspy.
"""

from ocdspy.program.render import BUILTIN_TOOLS, CORE_TOOLS, FINISH, available_tools

__all__ = ["BUILTIN_TOOLS", "CORE_TOOLS", "FINISH", "available_tools"]
