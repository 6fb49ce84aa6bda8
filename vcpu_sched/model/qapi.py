"""An error a QMP command answers with (qapi/error.h's Error: its class and its text, as QMP reports them)."""

from __future__ import annotations


class QmpError(Exception):
    def __init__(self, error_class: str, desc: str) -> None:
        super().__init__(desc)
        self.error_class = error_class
        self.desc = desc
