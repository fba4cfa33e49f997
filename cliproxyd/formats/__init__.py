"""
Wire formats, and the one contract every format module keeps.

There are four formats, one module each: C{openai_chat} (C{"openai"},
Chat Completions), C{claude} (C{"claude"}, Anthropic Messages), C{gemini}
(C{"gemini"}, generateContent) and C{responses} (C{"responses"}, OpenAI
Responses, also what Codex speaks); C{interactions} (C{"interactions"}, Google's
Interactions API) is the fifth. All translation goes through
L{cliproxyd.formats.canonical}; a format never imports another format.

Every format module provides the names of L{Format} (and the two with a
count endpoint those of L{CountingFormat}), so that callers can hold a
module as "the client's format" or "the upstream's format" and never branch
on which one it is. L{cliproxyd.formats.contract} documents each name.
An encoder takes the times and ids it writes from an L{Origin}.

Encoders and decoders are pure and synchronous; they never do I/O.
"""

from cliproxyd.formats import claude, gemini, interactions, openai_chat, responses
from cliproxyd.formats.common import DEFAULT_ORIGIN, Origin
from cliproxyd.formats.contract import CountingFormat, Decoder, Encoder, Format

__all__ = ["DEFAULT_ORIGIN", "FORMATS", "CountingFormat", "Decoder", "Encoder", "Format", "Origin",
           "claude", "gemini", "interactions", "openai_chat", "responses"]

#: The format modules by C{NAME}.
FORMATS = {m.NAME: m for m in (openai_chat, claude, gemini, responses, interactions)}
