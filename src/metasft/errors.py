"""The project's base error. Every error a user can cause subclasses it; the CLI prints it as one line."""
from __future__ import annotations


class MetasftError(Exception):
    """Bad input or state the user can fix; the message says what, where and what was expected."""
