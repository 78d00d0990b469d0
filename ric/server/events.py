"""What an engine tells the server about one answer while it is made: `Delta`s as the text grows, then one
`Done` or one `Failed`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Delta:
    """New text of the answer (never empty)."""

    text: str


@dataclass(frozen=True)
class Done:
    """The answer is complete: why it ended (stop, length, cancelled), its whole text, its token count."""

    reason: str
    text: str
    tokens: int


@dataclass(frozen=True)
class Failed:
    """The answer could not be made; `message` says why (sent to the client as a server error)."""

    message: str


Event = Delta | Done | Failed
FINAL = (Done, Failed)
