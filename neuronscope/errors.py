"""User-facing errors. Each message names the bad value and what would be accepted."""


class NeuronScopeError(Exception):
    """Base class: the CLI prints these without a traceback and exits with status 2."""


class ConfigError(NeuronScopeError):
    """A flag or config value is invalid (out of range, malformed selection, ...)."""


class CorpusError(NeuronScopeError):
    """The corpus is missing, unreadable, or holds no usable text."""


class ModelError(NeuronScopeError):
    """The model cannot be found, loaded, or has an unsupported architecture."""


class StoreError(NeuronScopeError):
    """The run location cannot be read or written (path, bucket, credentials)."""


class LLMError(NeuronScopeError):
    """The LLM backend failed after its retry budget (unreachable, timed out, crashed)."""


class AgentOutputError(NeuronScopeError):
    """An agent's answer could not be parsed after all retries; ``agent`` names the agent."""

    def __init__(self, message: str, agent: str | None = None):
        super().__init__(message)
        self.agent = agent
