"""The session-log model: the plugin format (FORMATS.md section 1), tolerant and lossless.

Every reader (plugin files, `opencode export`, OpenCode's SQLite and JSON stores) produces these
objects, so everything downstream sees one shape. Unknown fields are kept (`extra="allow"`):
a newer plugin's extra data survives a round trip. Only what the pipeline cannot do without is
required: a session's turns, each turn's task, each action's tool name.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)


class GitStatus(_Open):
    branch: str | None = None
    uncommittedChanges: int | None = None
    status: str | None = None


class Diagnostics(_Open):
    # Entries are usually {file, line, message, severity}, sometimes plain strings.
    errors: list[Any] = Field(default_factory=list)
    warnings: list[Any] = Field(default_factory=list)


class Context(_Open):
    workingDirectory: str | None = None
    projectType: str | None = None
    relevantFiles: list[str] = Field(default_factory=list)
    lspDiagnostics: Diagnostics | None = None
    gitStatus: GitStatus | None = None
    fileCount: int | None = None


class ConversationMessage(_Open):
    role: str
    content: Any = ""
    timestamp: str | None = None


class TurnInput(_Open):
    task: str
    context: Context = Field(default_factory=Context)
    conversationHistory: list[ConversationMessage] = Field(default_factory=list)


class Action(_Open):
    step: int | None = None
    tool: str
    callID: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    success: bool | None = None
    timestamp: str | None = None
    lspDiagnosticsAfter: Diagnostics | None = None


class TurnOutput(_Open):
    response: str = ""
    finalMessage: str | None = None


class TokenCache(_Open):
    read: float = 0
    write: float = 0


class TokenCost(_Open):
    input: float = 0
    output: float = 0
    cache: TokenCache | None = None


class Metrics(_Open):
    filesModified: int | None = None
    timeToCompletion: float | None = None
    toolCallCount: int | None = None
    tokenCost: TokenCost | None = None
    lspErrorsCleared: bool | None = None
    cacheHitRate: float | None = None


class Evaluation(_Open):
    correctness: float | None = None
    efficiency: float | None = None
    minimalEdits: float | None = None


class Outcome(_Open):
    success: bool | None = None
    taskCompleted: bool | None = None
    metrics: Metrics | None = None
    evaluation: Evaluation | None = None


class AgentInfo(_Open):
    name: str | None = None
    model: str | None = None
    temperature: float | None = None
    promptTokens: int | None = None
    completionTokens: int | None = None


class TurnMetadata(_Open):
    timestamp: str | None = None
    sessionId: str | None = None
    duration: float | None = None
    messageCount: int | None = None


class Turn(_Open):
    """One user request and everything the agent did for it (the plugin calls it an example)."""

    input: TurnInput
    actions: list[Action] = Field(default_factory=list)
    output: TurnOutput = Field(default_factory=TurnOutput)
    outcome: Outcome | None = None
    agent: AgentInfo | None = None
    metadata: TurnMetadata | None = None


class SessionLog(_Open):
    session: str | None = None
    generated: str | None = None
    totalExamples: int | None = None
    outcome: Outcome | None = None
    examples: list[Turn]
    # The variant written by the logging plugin itself keeps its totals at the top level.
    totalTurns: int | None = None
    successfulTurns: int | None = None
    overallSuccess: bool | None = None
    totalToolCalls: int | None = None

    @property
    def session_id(self) -> str | None:
        if self.session:
            return self.session
        for turn in self.examples:
            if turn.metadata and turn.metadata.sessionId:
                return turn.metadata.sessionId
        return None

    def session_success(self) -> bool | None:
        if self.outcome is not None and self.outcome.success is not None:
            return self.outcome.success
        return self.overallSuccess

    def turn_success(self, index: int) -> bool:
        """Did turn `index` succeed? Its own outcome wins, then the session's, then its actions."""
        turn = self.examples[index]
        if turn.outcome is not None and turn.outcome.success is not None:
            return turn.outcome.success
        session = self.session_success()
        if session is not None:
            return session
        return all(action.success is not False for action in turn.actions)
