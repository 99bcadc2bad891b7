"""Talking to a trained model: the terminal chat (`loom chat`) and the OpenAI-compatible server
(`loom serve`: `loom.serve.api`, decoding with the continuous-batching `loom.serve.engine`)."""

from loom.serve.terminal import ChatSession, chat_terminal

__all__ = ["ChatSession", "chat_terminal"]
