"""Talking to a trained model: the terminal chat now (`loom chat`); the HTTP server later."""

from loom.serve.terminal import ChatSession, chat_terminal

__all__ = ["ChatSession", "chat_terminal"]
