"""Prompt -> style tokens for a live session, encoded off the frame loop.

The official engine encodes prompts on a background CPU thread and re-reads the latest tokens every frame
(live_engine_and_controls.md §3.6): a new prompt never stalls audio, and the previous style holds until the new one is
ready. `LivePromptStyle` does the same for any `StyleSource`.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from openmrt.controls import Controls, Prompt
from openmrt.style import StyleSource

log = logging.getLogger(__name__)

__all__ = ["LivePromptStyle"]


class LivePromptStyle:
    """Latest tokens for the controls' prompt blend; `tokens()` never blocks (except `wait=True`).

    Args:
        source: the style model (None: prompts can't be encoded; tokens stay None, the style channels masked).
        prompts: the initial prompt slots, encoded at once (blocking) so the session starts with their style.
    """

    def __init__(self, source: StyleSource | None, prompts: tuple[Prompt, ...] = ()):
        self.source = source
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="style") if source else None
        self._asked: tuple[Prompt, ...] = prompts
        self._tokens: tuple[int, ...] | None = source.tokens_for(prompts) if (source and prompts) else None
        self._pending: Future | None = None
        self.errors = 0

    def _encode(self, prompts: tuple[Prompt, ...]) -> None:
        try:
            toks = self.source.tokens_for(prompts) if prompts else None  # type: ignore[union-attr]
        except Exception as e:  # a bad prompt (unreadable file, ...) keeps the previous style
            self.errors += 1
            log.warning("style prompt not encoded, keeping the previous style: %s", e)
            return
        with self._lock:
            if prompts == self._asked:  # a newer request may have arrived meanwhile
                self._tokens = toks

    def tokens(self, controls: Controls, wait: bool = False) -> tuple[int, ...] | None:
        """The tokens of the newest finished encode; starts an encode when `controls.prompts` changed."""
        if self._pool is None or controls.style_tokens is not None:
            return controls.style_tokens
        with self._lock:
            if controls.prompts != self._asked:
                self._asked = controls.prompts
                self._pending = self._pool.submit(self._encode, controls.prompts)
            pending = self._pending
        if wait and pending is not None:
            pending.result()
        return self._tokens

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
