"""Turn SIGINT/SIGTERM into a request to stop after the current step (then checkpoint)."""
from __future__ import annotations

import signal
import threading


class GracefulInterrupt:
    """Context manager: the first SIGINT/SIGTERM sets `requested`; a second SIGINT aborts at once.

    Handlers are only installed from the main thread (Python allows nothing else) and the
    previous handlers are restored on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.signal_name = ""
        self._previous = {}

    @property
    def source(self) -> str:
        """What asked to stop, for messages: the signal's name, or another rank."""
        return self.signal_name or "a signal to another rank"

    def requested_on_any(self, dist, device) -> bool:
        """Whether any rank got a signal: the same answer on every rank (`dist.any`, a
        collective), so all ranks stop after the same step."""
        return dist.any(self.requested, device)

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class TrainingInterrupted(RuntimeError):
    """A run without checkpoints (the text encoder's pretraining) stopped at a signal; nothing
    it trained was saved."""
