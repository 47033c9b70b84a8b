"""The LLM layer: one interface for every agent, over vLLM actors or an OpenAI-compatible server."""
